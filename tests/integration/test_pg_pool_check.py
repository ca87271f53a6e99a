"""Pooled connections the server ended are replaced before anyone gets them."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.integration.pg_backends import terminate_backend
from tokenvault_common.pg_pool import check_connection_cheaply


def _backend_pid(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])


def test_a_terminated_connection_is_replaced_without_a_failed_checkout(stack_env: dict[str, str]) -> None:
    dsn = stack_env["PG_ADMIN_DSN"]
    with ConnectionPool(dsn, min_size=1, max_size=1, check=check_connection_cheaply, open=True) as pool:
        first = _backend_pid(pool)
        assert _backend_pid(pool) == first  # a healthy connection is kept
        terminate_backend(dsn, first)
        # No OperationalError: the check found the dead connection and the pool replaced it.
        assert _backend_pid(pool) != first


def test_a_closed_connection_fails_the_check(stack_env: dict[str, str]) -> None:
    conn = psycopg.connect(stack_env["PG_ADMIN_DSN"])
    check_connection_cheaply(conn)  # healthy: passes
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        check_connection_cheaply(conn)
