"""A service refuses at start a DSN that would hand its database password to an impostor (attack 25).

libpq sends a DSN's password to whatever answers on the database's address, in clear if it asks,
unless the DSN has libpq authenticate the server (`sslmode=verify-full`) or refuse to send it
(`require_auth=scram-sha-256`). Here the vault service and the ETL are started as an operator starts
them, with the stack's DSN pointed at an impostor asking for the password in clear and stripped of
`require_auth`: each stops with its configuration exit status, naming the variable and the fix, and
the impostor never sees a connection. With `require_auth` kept (every DSN shipped), the setting
passes the check (the connection is refused by libpq instead: test_postgres_require_auth.py).
A DSN naming a libpq service whose entry holds the host and the password is refused the same way
(review 28, F1: the check passed it, and the vault service sent the stack's password in clear);
the other places libpq finds a password or a host: test_database_dsn_resolved.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.stack import etl_service_env, vault_service_env
from tests.integration.fake_postgres import CLEARTEXT, Impostor, serving

REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "vault_service": (["vault_service"], "TOKENVAULT_DATABASE_DSN", vault_service_env, 2),
    "etl_service": (["etl_service", "drain"], "ETL_DATABASE_DSN", etl_service_env, 2),
}


@pytest.fixture
def impostor() -> Iterator[Impostor]:
    with serving(Impostor(auth=CLEARTEXT)) as fake:
        yield fake


def _without_require_auth(dsn: str, port: int) -> str:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k != "require_auth" and v is not None}
    return make_conninfo("", **{**params, "host": "127.0.0.1", "port": str(port), "connect_timeout": "5"})


@pytest.mark.parametrize("service", SERVICES)
def test_a_password_dsn_that_could_give_the_password_away_stops_the_start(
    stack_env: dict[str, str], impostor: Impostor, service: str
) -> None:
    args, variable, service_env, exit_status = SERVICES[service]
    env = service_env(stack_env)
    assert "require_auth=scram-sha-256" in env[variable]  # as shipped
    password = str(conninfo_to_dict(env[variable])["password"])
    env[variable] = _without_require_auth(env[variable], impostor.port)
    result = subprocess.run(
        [sys.executable, "-m", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == exit_status, result.stderr[-2000:]
    assert f"{variable} may reach the database over TCP" in result.stderr
    assert "add sslmode=verify-full" in result.stderr and "require_auth=scram-sha-256" in result.stderr
    assert password not in result.stderr  # the message never quotes the DSN
    assert impostor.startups == 0 and impostor.replies == []


def test_a_service_file_s_password_does_not_reach_an_impostor(
    stack_env: dict[str, str], impostor: Impostor, tmp_path: Path
) -> None:
    """Review 28, F1: `service=` fills the host and the password from PGSERVICEFILE, which the check cannot read."""
    env = vault_service_env(stack_env)
    params = conninfo_to_dict(env["TOKENVAULT_DATABASE_DSN"])
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        f"[tokenvault]\nhost=127.0.0.1\nport={impostor.port}\npassword={params['password']}\nconnect_timeout=5\n"
    )
    env["TOKENVAULT_DATABASE_DSN"] = f"service=tokenvault user={params['user']} dbname={params['dbname']}"
    result = subprocess.run(
        [sys.executable, "-m", "vault_service"],
        env={**os.environ, **env, "PGSERVICEFILE": str(service_file)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert impostor.replies == [], f"the password went to the impostor, exit {result.returncode}"
    assert result.returncode == 2 and "TOKENVAULT_DATABASE_DSN may reach the database over TCP" in result.stderr
    assert str(params["password"]) not in result.stderr
