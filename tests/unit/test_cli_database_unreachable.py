"""A database the command cannot reach is named by libpq's own words, not "OperationalError" (walk 53, W53-4).

With the stack's PostgreSQL down (or shutting down: it refuses new sessions while the vault's pooled ones go on),
`reveal --query` said "the query failed: OperationalError", `erase` "counting the rows of user_logins that hold
these tokens failed: OperationalError" and `audit login-rows` "reading the rows of user_logins failed:
OperationalError" - the error's type, with no word of what failed or what to do. A connection failure carries no
server diagnostic, so the message now quotes libpq and says where to look. Real libpq, a port nobody listens on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import date

import pytest

from tokenvault_cli.erase_reach import check_rows_between, count_reach
from tokenvault_cli.query import QueryError, run_query
from tokenvault_cli.rows_by_token import check_rows_holding
from tokenvault_common.login_row_signatures import PublicKeys

IP_TOKEN = "ip_" + "a" * 22


@pytest.fixture
def closed_port_dsn() -> str:
    """A DSN whose port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"host=127.0.0.1 port={port} dbname=tokenvault user=analyst require_auth=scram-sha-256 connect_timeout=5"


def _no_keys() -> PublicKeys:
    raise AssertionError("no row was read: the keys are never asked for")


READS: dict[str, Callable[[str], object]] = {
    "reveal --query": lambda dsn: run_query(dsn, "SELECT 1", 10),
    "erase's count": lambda dsn: count_reach(dsn, [IP_TOKEN], ["u-1"], _no_keys, whole_lists=True),
    "audit login-rows --since": lambda dsn: check_rows_between(dsn, date(2026, 12, 1), date(2026, 12, 7), _no_keys),
    "audit login-rows --token": lambda dsn: check_rows_holding(dsn, [IP_TOKEN], _no_keys),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_an_unreachable_database_is_named_with_what_to_do(closed_port_dsn: str, read: Callable[[str], object]) -> None:
    with pytest.raises(QueryError) as failed:
        read(closed_port_dsn)
    said = str(failed.value)
    assert "Connection refused" in said and "127.0.0.1" in said, said
    assert "the database is down or refused the connection" in said and "`make status`, `make up`" in said, said
    assert not said.endswith("OperationalError") and "\n" not in said
