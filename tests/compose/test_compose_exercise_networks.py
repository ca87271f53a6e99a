"""The exercise profile's public logins are out of the host's reach (review 27, R27-1).

The exercise's images take public credentials: their queue any key, their Postgres
`postgres`/`postgres`. With the main vault tokenizing between them, whoever reaches both can
send chosen ips and read their tokens: a dictionary oracle. They publish no port (review 26),
but on a Linux host a plain compose network's bridge holds an address of the host, so any local
user reached their containers by address (shown on this engine: a plain and an `internal`
network alike). docker-compose.yml's exercise networks give the bridge no address
(`inhibit_ipv4`), so the host has no route to them.

Here stand-ins with the same public logins (docker-compose.test.yml) run on the networks as
docker-compose.yml makes them. From this host, by every address they have: the Postgres refuses
the superuser's public login for want of a connection, and the emulator never answers. The
control, from the profile's containers on the same networks: the exercise's migrator logs in with
that public login (`--public-login`) and applies the migrations; the exercise ETL's container gets
the emulator's answer, by name.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest

from tests.compose.stack import Compose

pytestmark = pytest.mark.compose

EXERCISE = ("--profile", "exercise")
SERVERS = ("exercise-postgres", "exercise-localstack")
HEALTH = "/_ministack/health"


@pytest.fixture
def exercise_servers(compose: Compose) -> Iterator[dict[str, list[str]]]:
    """The two exercise servers (stand-ins) up on their own networks; their addresses; removed after."""
    try:
        compose.run(*EXERCISE, "up", "--detach", "--wait", "--no-build", "--no-deps", *SERVERS, timeout=180)
        ids = {name: str(row["ID"]) for name, row in compose.states().items() if name in SERVERS}
        inspected = json.loads(compose.engine.docker("inspect", *ids.values()).stdout)
        found: dict[str, list[str]] = {}
        for name, container_id in ids.items():
            container = next(c for c in inspected if c["Id"].startswith(container_id))
            networks = container["NetworkSettings"]["Networks"].values()
            found[name] = sorted(network["IPAddress"] for network in networks if network["IPAddress"])
        assert set(found) == set(SERVERS) and all(found.values()), f"no address for an exercise server: {found}"
        yield found
    finally:
        compose.run(*EXERCISE, "rm", "--stop", "--force", *SERVERS, check=False, timeout=120)


def _host_logs_in(address: str) -> bool:
    """Whether this host logs in to a Postgres at `address` with the exercise image's public login."""
    try:
        dsn = f"host={address} port=5432 user=postgres password=postgres dbname=postgres connect_timeout=4"
        with psycopg.connect(dsn) as connection:
            return connection.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def _host_gets_the_emulator(address: str) -> bool:
    """Whether this host gets the SQS emulator's own answer at `address` (any other answer is not it)."""
    try:
        with urllib.request.urlopen(f"http://{address}:4566{HEALTH}", timeout=4) as response:
            return b"sqs" in response.read()
    except (OSError, ValueError):
        return False


def _from_the_profile(compose: Compose, code: str) -> str:
    """`code` run by python in a container of the profile that shares both networks (the exercise ETL's)."""
    result = compose.run(
        *EXERCISE, "run", "--rm", "--no-deps", "-T", "--entrypoint", "python", "exercise-etl", "-c", code, timeout=120
    )
    return result.stdout.strip()


def test_the_exercise_servers_answer_their_own_containers_and_not_the_host(
    compose: Compose, exercise_servers: dict[str, list[str]]
) -> None:
    with compose.step(*SERVERS):
        migrated = compose.run(*EXERCISE, "run", "--rm", "--no-deps", "-T", "exercise-migrate", timeout=180)
        assert "applied" in migrated.stdout, migrated.stdout  # its own container logs in (--public-login)
        control = (
            f"import urllib.request as u; print(b'sqs' in u.urlopen('http://exercise-localstack:4566{HEALTH}').read())"
        )
        assert _from_the_profile(compose, control) == "True", "the exercise ETL's container reaches the queue"
        tries = {"exercise-postgres": _host_logs_in, "exercise-localstack": _host_gets_the_emulator}
        reached = [
            f"{name} at {address}"
            for name, reaches in tries.items()
            for address in exercise_servers[name]
            if reaches(address)
        ]
        assert not reached, f"this host reached the exercise's public logins by address: {reached}"
