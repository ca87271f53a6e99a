"""No DSN of the stack hands its password to whatever listens on Postgres's port.

Fourth insider round, MED-3: while the stack's Postgres was down, a local user (`nobody`)
listening on 127.0.0.1:PORT asked each connecting client for a cleartext password, and libpq
sent it: the vault's role then erased tokens directly, bypassing certificates and the erase
budget. Every DSN the embedded stack writes, and compose's, now carries
`require_auth=scram-sha-256`. Here each is pointed at an impostor that asks for the password in
clear (or as MD5): the connection fails and the impostor receives no password message. `make
psql` (devstack/psql.py), whose psql may predate require_auth, goes through the cluster's
private Unix socket instead and still gets in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from devstack.envfile import write_env_file
from devstack.stack import etl_service_env, vault_service_env
from tests.compose_model import resolved
from tests.integration.fake_postgres import CLEARTEXT, MD5, Impostor, serving


@pytest.fixture(params=[CLEARTEXT, MD5], ids=["cleartext", "md5"])
def impostor(request: pytest.FixtureRequest) -> Iterator[Impostor]:
    """An impostor on a free loopback port, as another local user runs it while Postgres is down."""
    with serving(Impostor(auth=request.param)) as fake:
        yield fake


def _stack_dsns(env: dict[str, str]) -> dict[str, str]:
    """Every DSN the embedded stack writes (stack.env) or gives its services."""
    services = {**vault_service_env(env), **etl_service_env(env)}
    return {k: v for k, v in {**env, **services}.items() if k.endswith("_DSN")}


def _compose_dsns(tmp_path: Path) -> dict[str, str]:
    """Every DSN of compose with a password of the stack's: all but the exercise image's public superuser login."""
    found = {}
    for name, service in resolved(tmp_path)["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if name == "exercise-migrate" and key == "MIGRATIONS_DSN":
                continue  # postgres/postgres: that image's public defaults, nothing of ours to give away
            if str(value).startswith("postgresql://"):
                found[f"{name}:{key}"] = str(value)
    return found


def _refused_without_password(dsns: dict[str, str], impostor: Impostor) -> None:
    for name, dsn in dsns.items():
        before = impostor.startups
        with pytest.raises(psycopg.OperationalError, match="scram-sha-256"):
            psycopg.connect(make_conninfo(dsn, host="127.0.0.1", port=impostor.port, connect_timeout=5)).close()
        assert impostor.startups == before + 1, f"{name} did not reach the impostor"
    assert b"p" not in impostor.replies, f"a password was sent to the impostor ({len(impostor.replies)} replies)"


def test_no_dsn_of_the_embedded_stack_gives_its_password_to_an_impostor(
    stack_env: dict[str, str], impostor: Impostor
) -> None:
    dsns = _stack_dsns(stack_env)
    assert {"PG_ADMIN_DSN", "PG_VAULT_DSN", "PG_ETL_DSN", "PG_ANALYST_DSN", "TOKENVAULT_DATABASE_DSN"} <= dsns.keys()
    _refused_without_password(dsns, impostor)
    for dsn in dsns.values():  # and the genuine server still lets each in
        psycopg.connect(dsn, connect_timeout=5).close()


def test_no_dsn_of_the_compose_stack_gives_its_password_to_an_impostor(tmp_path: Path, impostor: Impostor) -> None:
    dsns = _compose_dsns(tmp_path)
    assert {
        "migrate:MIGRATIONS_DSN",
        "vault-service:TOKENVAULT_DATABASE_DSN",
        "etl-service:ETL_DATABASE_DSN",
        "exercise-etl:ETL_DATABASE_DSN",  # attack 25, F1: it gave the ETL's password to the exercise image's server
    } <= dsns.keys()
    _refused_without_password(dsns, impostor)


def test_make_psql_gets_in_as_the_analyst_and_the_admin_with_the_system_s_psql(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    # The session stack keeps its env in memory: give devstack.psql the files `make up` writes.
    (tmp_path / "state.json").write_text((Path(stack_env["STACK_DIR"]) / "state.json").read_text())
    write_env_file(tmp_path / "stack.env", stack_env)
    for role, expected in (("analyst", "analyst"), ("admin", "tokenvault_admin")):
        result = subprocess.run(
            [sys.executable, "-m", "devstack.psql", role, "-XAtc", "SELECT current_user"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TOKENVAULT_STACK_DIR": str(tmp_path)},
            timeout=30,
        )
        assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr[-500:]
