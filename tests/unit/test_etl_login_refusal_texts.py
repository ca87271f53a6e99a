"""The pg_hba refusals PostgreSQL sends before a session (no SQLSTATE in psycopg 3.3) are misconfigurations (R49-1).

The test stack cannot change pg_hba.conf under the other tests, so these two are read from the server's own texts
(src/backend/libpq/auth.c); NOLOGIN, a missing database and a revoked CONNECT are checked on a real PostgreSQL in
tests/integration/test_etl_login_refusals.py.
"""

from __future__ import annotations

import psycopg
import pytest

from etl_service.adapters.postgres import database_error
from etl_service.errors import DependencyDown, Misconfigured

_AT = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '


@pytest.mark.parametrize(
    "text",
    [
        'no pg_hba.conf entry for host "10.0.0.9", user "tokenvault_etl", database "tokenvault", no encryption',
        'pg_hba.conf rejects connection for host "10.0.0.9", user "tokenvault_etl", database "tokenvault", SSL on',
    ],
)
def test_a_pg_hba_refusal_is_a_misconfiguration(text: str) -> None:
    found = database_error(psycopg.OperationalError(_AT + text))
    assert isinstance(found, Misconfigured) and "pg_hba.conf" in str(found), found


@pytest.mark.parametrize(
    "text",
    [
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
        "the database system is starting up",
        "sorry, too many clients already",
        # a TLS connection cut by the network or a server going away (libpq's fe-secure-openssl.c): etl50
        "SSL SYSCALL error: EOF detected",
        "SSL error: unexpected eof while reading",
        "SSL connection has been closed unexpectedly",
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
    ],
)
def test_a_database_that_does_not_answer_or_is_busy_stays_an_outage(text: str) -> None:
    assert isinstance(database_error(psycopg.OperationalError(_AT + text)), DependencyDown)
