"""The migrator and `tokenvault reveal --query` refuse a DSN that would hand a password to an impostor.

The migrator connects as the owner (or the bootstrap superuser): of all the stack's passwords the
one that can do anything in Postgres, the audit trail's anchoring aside. Its DSN had no check,
while the services' did (attack 25, review 28): pointed at a local listener on the database's
port (PostgreSQL down for an upgrade, say), `python -m tokenvault_common.migrations` sent the
password in clear. Here it is run as an operator runs it, against an impostor asking for the
password in clear: refused before any connection, naming the fix, never quoting the DSN. With
`require_auth=scram-sha-256` (compose's migrate) the check passes and libpq itself refuses to send
the password; `--public-login` (the exercise image's public postgres/postgres) connects as asked.

The same for the DSN `tokenvault reveal --query` reads the analysts' rows with: it holds a person's
password (a person chooses it, so only `sslmode=verify-full` keeps it from an impostor's offline
guessing; `require_auth` at least keeps it off the wire). Refused with exit 2, nothing queried.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fake_postgres import CLEARTEXT, Impostor, serving

REPO = Path(__file__).resolve().parents[2]
PASSWORD_MESSAGE = b"p"


@pytest.fixture
def impostor() -> Iterator[Impostor]:
    with serving(Impostor(auth=CLEARTEXT)) as fake:
        yield fake


def _migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "MIGRATIONS_DSN"}
    return subprocess.run(
        [sys.executable, "-m", "tokenvault_common.migrations", *args],
        env={**clean, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _owner_dsn(port: int, password: str, extra: str = "") -> str:
    return f"postgresql://tokenvault_admin:{password}@127.0.0.1:{port}/tokenvault?connect_timeout=5{extra}"


@pytest.mark.parametrize("given_as", ["--dsn", "MIGRATIONS_DSN"])
def test_an_owner_dsn_that_could_give_the_password_away_is_refused_before_connecting(
    impostor: Impostor, given_as: str
) -> None:
    password = secrets.token_urlsafe(18)
    dsn = _owner_dsn(impostor.port, password)
    result = _migrate("--dsn", dsn) if given_as == "--dsn" else _migrate(env={"MIGRATIONS_DSN": dsn})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the migrator's DSN (--dsn or MIGRATIONS_DSN) may reach the database over TCP" in result.stderr
    assert "add sslmode=verify-full" in result.stderr and "nothing was done" in result.stderr
    assert password not in result.stderr + result.stdout  # the message never quotes the DSN
    assert impostor.startups == 0 and impostor.replies == []


def test_with_require_auth_the_check_passes_and_libpq_keeps_the_password(impostor: Impostor) -> None:
    password = secrets.token_urlsafe(18)
    result = _migrate("--dsn", _owner_dsn(impostor.port, password, "&require_auth=scram-sha-256"))
    assert result.returncode != 0  # no database here: the impostor asked for the password in clear
    assert "may reach the database" not in result.stderr  # past the check: libpq connected ...
    assert impostor.startups == 1 and PASSWORD_MESSAGE not in impostor.replies  # ... and kept the password
    assert password not in result.stderr + result.stdout


def test_a_public_login_connects_as_asked(impostor: Impostor) -> None:
    """`--public-login` (the exercise image's postgres/postgres): the check is skipped, as the flag says."""
    result = _migrate("--public-login", "--dsn", _owner_dsn(impostor.port, "postgres"))
    assert result.returncode != 0  # the impostor is no database
    assert "may reach the database" not in result.stderr
    assert impostor.startups == 1 and impostor.replies == [PASSWORD_MESSAGE]


def test_reveal_query_refuses_an_analyst_dsn_that_could_give_the_password_away(impostor: Impostor) -> None:
    password = secrets.token_urlsafe(18)
    dsn = f"postgresql://analyst:{password}@127.0.0.1:{impostor.port}/tokenvault?connect_timeout=5"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TOKENVAULT_"))}
    result = subprocess.run(
        [sys.executable, "-m", "tokenvault_cli", "reveal", "--purpose", "CASE-1", "--query", "SELECT 1"],
        env={**clean, "TOKENVAULT_ANALYST_DSN": dsn},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the query's DSN (--dsn, TOKENVAULT_ANALYST_DSN" in result.stderr and "nothing was queried" in result.stderr
    assert password not in result.stderr + result.stdout
    assert impostor.startups == 0 and impostor.replies == []
