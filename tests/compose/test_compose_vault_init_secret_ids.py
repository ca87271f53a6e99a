"""Every `docker compose up` destroys the AppRole secret ids handed out before (vault-init).

deploy/compose/vault-init.sh runs on every `up`: it issues each service a new secret id into
that service's own volume (`vault-creds-vault-service`, `vault-creds-etl-service`) and destroys
the earlier ones, so a copy taken from a volume stops working at the next `up`, while the
services read the file again at each login and keep working. Shown here against the stack's real OpenBao: a copy of
each secret id logs in before the second `up` and is refused after it, the new one logs in,
each role holds one secret id, the running services still carry events through the pipeline,
and restarted they log in with the new ids.

Runs on the session's stack after test_compose_stack.py (pytest collects the files of a
directory in name order; those steps count rows from a fresh stack, so this file's name must
sort after theirs); run alone, it starts the stack with a first `up --wait`. Secret ids and
tokens are compared, never printed: failure messages carry OpenBao's error with any secret id
replaced.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable, Mapping

import pytest

from tests.compose.conftest import Timer, figure
from tests.compose.services import LONG_RUNNING, ONE_SHOT, counts, running_healthy, up
from tests.compose.stack import Compose, wait_for

pytestmark = pytest.mark.compose

# AppRole role -> (its role id's variable in the compose .env, the service that reads its
# secret id, the file in its vault-creds-* volume as that service sees it).
ROLES = {
    "tokenvault-service": ("VAULT_SERVICE_ROLE_ID", "vault-service", "/vault-creds/secret-id"),
    "tokenvault-etl": ("VAULT_ETL_ROLE_ID", "etl-service", "/vault-creds/etl-secret-id"),
}
QUEUE_URL = "http://localstack:4566/000000000000/login-queue"
SEALER_LOGIN = "logged in to OpenBao for sealing dead letters"  # the ETL's log line at each AppRole login
REFUSED = "invalid role or secret ID"  # OpenBao's (and Vault's) answer to a destroyed secret id


def role_ids(compose: Compose) -> dict[str, str]:
    """The role id of each AppRole, from the stack's .env."""
    env = dict(line.split("=", 1) for line in compose.env_file.read_text().splitlines() if "=" in line)
    return {role: env[variable].strip() for role, (variable, _, _) in ROLES.items()}


def secret_ids(compose: Compose) -> dict[str, str]:
    """Each role's secret id as its service reads it from its volume now."""
    found = {}
    for role, (_, service, path) in ROLES.items():
        value = compose.run("exec", "-T", service, "cat", path).stdout.strip()
        assert value, f"{service} finds no secret id in {path}"
        found[role] = value
    return found


def vault_cli(
    compose: Compose, *args: str, stdin: str = "", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`vault ARGS` inside the vault container (OpenBao's CLI in the test); `env` names pass by name."""
    names = [arg for name in (env or {}) for arg in ("-e", name)]  # values never on a command line
    command = compose.command("exec", "-T", "-e", "VAULT_ADDR=http://127.0.0.1:8200", *names, "vault", "vault", *args)
    return subprocess.run(
        command, env={**compose.engine.env, **(env or {})}, input=stdin, capture_output=True, text=True, timeout=60
    )


def redacted(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced, fit for a failure message."""
    for secret in secrets:
        text = text.replace(secret, "<secret id>")
    return text


def login(compose: Compose, role_id: str, secret_id: str) -> str | None:
    """A real AppRole login at the stack's OpenBao: None when a token was issued, else why not."""
    body = json.dumps({"role_id": role_id, "secret_id": secret_id})  # on stdin, never on a command line
    result = vault_cli(compose, "write", "-format=json", "auth/approle/login", "-", stdin=body)
    if result.returncode == 0 and json.loads(result.stdout).get("auth", {}).get("client_token"):
        return None
    return redacted(f"exit {result.returncode}: {result.stderr.strip()[-400:]}", [secret_id])


def root_token(compose: Compose) -> str:
    """The root token vault-init keeps in the vault-unseal volume (docs: dev-grade unseal)."""
    return compose.run(
        "run", "--rm", "-T", "--no-deps", "--entrypoint", "cat", "vault-init", "/vault-unseal/root-token"
    ).stdout.strip()


def secret_id_count(compose: Compose, role: str, root: str) -> int:
    """How many secret ids the role holds (listed by accessor)."""
    listing = ("list", "-format=json", f"auth/approle/role/{role}/secret-id")
    result = vault_cli(compose, *listing, env={"VAULT_TOKEN": root})
    assert result.returncode == 0, f"listing {role}'s secret ids failed: {result.stderr.strip()[-400:]}"
    return len(json.loads(result.stdout))


def healthy(compose: Compose, service: str) -> bool:
    row = compose.states().get(service, {})
    return row.get("State") == "running" and row.get("Health") == "healthy"


def assert_stack_healthy(compose: Compose) -> None:
    states = compose.states()
    for name in LONG_RUNNING:
        assert (states[name]["State"], states[name]["Health"]) == ("running", "healthy"), name
    for name in ONE_SHOT:
        assert (states[name]["State"], states[name]["ExitCode"]) == ("exited", 0), name


def events_go_through(compose: Compose, seed: int) -> None:
    """Ten new events (distinct by seed) are accounted for by the ETL, and some tokenized and stored."""
    rows, quarantined = counts(compose)
    compose.run(
        "run", "--rm", "--no-deps", "load-sample", "python", "-m", "devstack.events",
        "--events", "10", "--seed", str(seed), "--queue-url", QUEUE_URL,
    )  # fmt: skip
    wait_for(lambda: sum(counts(compose)) >= rows + quarantined + 10, 60, "10 new events accounted for")
    assert counts(compose)[0] > rows, "no new event was tokenized and stored"


def log_lines(compose: Compose, service: str, text: str) -> int:
    """How many lines of the service's container log (every start of it) hold `text`."""
    return compose.run("logs", "--no-color", service).stdout.count(text)


def restart(compose: Compose, service: str, ready: str) -> None:
    """Restart `service`; wait until it logs `ready` once more and is healthy."""
    before = log_lines(compose, service, ready)
    compose.run("restart", service, timeout=120)

    def ready_again() -> bool:
        return log_lines(compose, service, ready) > before and healthy(compose, service)

    wait_for(ready_again, 90, f"{service} ready and healthy after restart")


def test_each_up_destroys_the_earlier_secret_ids_and_the_services_log_in_with_the_new(compose: Compose) -> None:
    timer = Timer()
    with compose.step("vault", "vault-init", "vault-service", "etl-service"):
        if not running_healthy(compose):  # as the steps before left it; run alone, a first `up`
            up(compose)
        roles = role_ids(compose)
        old = secret_ids(compose)
        for role, secret in old.items():  # the copy works while it is current: the login below is sound
            refusal = login(compose, roles[role], secret)
            assert refusal is None, f"{role}: the current secret id does not log in: {refusal}"

        seconds = up(compose)  # a second `docker compose up`: vault-init runs again
        figure("docker compose up --wait again (running stack, vault-init again)", f"{seconds:.0f} s")
        new, root = secret_ids(compose), root_token(compose)
        for role in ROLES:
            replaced = new[role] != old[role]  # compared, never printed
            assert replaced, f"{role}: the second up did not hand out a new secret id"
            refusal = login(compose, roles[role], old[role])
            assert refusal is not None, f"{role}: the secret id of the earlier up still logs in"
            assert REFUSED in refusal, f"{role}: the old secret id failed for another reason: {refusal}"
            refusal = login(compose, roles[role], new[role])
            assert refusal is None, f"{role}: the new secret id does not log in: {refusal}"
            assert secret_id_count(compose, role, root) == 1, f"{role} holds secret ids besides the current one"
        assert_stack_healthy(compose)
        events_go_through(compose, seed=int(time.time()))  # the running services, not restarted

        # Restarted, each service logs in with the secret id in the volume now: the vault service
        # before it loads its data keys and serves; the ETL at start, sealing a probe. The ETL is
        # restarted last: its long polls abandoned at stop still take messages for a while.
        restart(compose, "vault-service", ready='"message": "serving"')
        events_go_through(compose, seed=int(time.time()) + 1)
        logins = log_lines(compose, "etl-service", SEALER_LOGIN)
        restart(compose, "etl-service", ready='"message": "started"')
        assert log_lines(compose, "etl-service", SEALER_LOGIN) == logins + 1, "the restarted ETL did not log in"
    figure("secret ids destroyed at each up (whole test)", f"{timer.seconds:.0f} s")
