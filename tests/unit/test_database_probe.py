"""The upkeep's database probe tells a server refusing the vault's connection from no server at all (review 19, R19-7).

The database owner, no superuser, can make the server refuse a new connection of the vault's
(`ALTER DATABASE ... CONNECTION LIMIT`: 53300, `REVOKE CONNECT`: 42501, a role's NOLOGIN: 28000)
while his lock holds the pooled ones; the probe's failure then read as an outage, and held the
tampering alerts. psycopg gives no SQLSTATE for a start-up failure, so the probe asks libpq's
PQping: these run the real probe, psycopg and libpq against a fake server (refusing_postgres.py).
"""

from __future__ import annotations

import logging
import socket

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.unit.refusing_postgres import refusing
from vault_service.adapters.postgres.audit_chain import PostgresAuditChain
from vault_service.domain.database_probe import ProbeAnswer

ROLE, DATABASE = "probe_role_a7", "probe_db_b8"
"""Named in libpq's message of every failure: never in the log."""


def _probe(port: int) -> ProbeAnswer:
    """The store's probe through a pool set up as the vault's (a URI, psycopg's own keywords among libpq's)."""
    pool = ConnectionPool(
        f"postgresql://{ROLE}:pw@127.0.0.1:{port}/{DATABASE}",
        kwargs={"application_name": "tokenvault-vault", "autocommit": True, "options": "-c search_path=vault"},
        open=False,
    )
    return PostgresAuditChain(pool).probe_database()


@pytest.mark.parametrize("sqlstate", ["53300", "42501", "28000"], ids=["connection limit", "no CONNECT", "no LOGIN"])
def test_a_server_refusing_the_probe_at_start_up_answers(sqlstate: str, caplog: pytest.LogCaptureFixture) -> None:
    with refusing(sqlstate) as (port, startups), caplog.at_level(logging.DEBUG):
        answer = _probe(port)
    assert answer is ProbeAnswer.REFUSED and answer.answers
    assert startups.value == 2  # the probe, then libpq's PQping
    assert "OperationalError" in caplog.text
    assert ROLE not in caplog.text and DATABASE not in caplog.text and "127.0.0.1" not in caplog.text


def test_a_server_that_cannot_take_connections_now_does_not_answer() -> None:
    with refusing("57P03") as (port, _):  # starting up, shutting down, in recovery: a restart, an outage
        assert _probe(port) is ProbeAnswer.SILENT


def test_no_server_listening_does_not_answer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    assert _probe(port) is ProbeAnswer.SILENT


def test_a_probe_timing_out_does_not_answer_and_is_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg's binary build holds the GIL through PQping: after a timeout it would stop every serving thread."""

    def timing_out(*args: object, **kwargs: object) -> None:
        raise psycopg.errors.ConnectionTimeout("connection timeout expired")

    monkeypatch.setattr(psycopg, "connect", timing_out)
    with refusing("53300") as (port, startups):
        assert _probe(port) is ProbeAnswer.SILENT
    assert startups.value == 0
