"""One login's memory and temporary files are bounded per server process, and the server serves on (attack 31, F1, F2).

F1: `SET work_mem = '256MB'` (a user's setting) and cursors WITH HOLD, each materialized into the backend's memory at
its commit and kept while the session is idle. Before, the backend grew until the kernel killed it, and the
postmaster then ended every session - the vault's, the ETL's, the watchdog's - and ran crash recovery. Now the
postmaster runs with an address-space limit every backend inherits (devstack/postgres.py, BACKEND_MEMORY_HEADROOM):
the greedy statement gets `ERROR: out of memory`, its session and every other one go on.

F2: cursors WITH HOLD spilled to temporary files with no bound (`temp_file_limit` unset): the disk filled in a
second, writes failed, the next checkpoint PANICked. Now deploy/postgres/tokenvault.conf sets it (1GB, per process,
superuser-only): the spill past it is refused with its error and deleted.

Real PostgreSQL as the stack starts it (the session's cluster) and the real vault on it, as the analyst's and the
ETL's logins. Bounded whatever the server does: at most 8 cursors of ~200 MB in memory (1.6 GB, all kept by a server
without the bound) and 5 of ~256 MB on disk (1.3 GB), each session closed at the end, which frees them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg
import pytest
from psycopg import errors

from tests.conftest import RunningVault
from tests.integration.fresh_values import issue_fresh_ip

LOGINS = ["PG_ANALYST_DSN", "PG_ETL_DSN"]

IN_MEMORY = "SELECT g, repeat('x', 1000) FROM generate_series(1, 209715) g"
"""~200 MB of rows: under a work_mem of 256MB a cursor WITH HOLD keeps them all in the backend's memory."""
MOST_IN_MEMORY = 8
"""1.6 GB at most: past the bound (1 GiB beyond the shared memory), and a safe size for the host if there is none."""

SPILLED = "SELECT g, repeat('x', 1000) FROM generate_series(1, 262144) g"
"""~270 MB of rows: at the default work_mem of 4MB a cursor WITH HOLD writes them to a temporary file."""
MOST_SPILLED = 5
"""1.3 GB at most: past temp_file_limit (1GB), and all kept by a server without one."""


@contextmanager
def _server_watched(env: dict[str, str]) -> Iterator[psycopg.Connection]:
    """A session of the serving role opened before the act; after it, the same server (no crash-restart) serves it."""
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        started = _start_time(admin)
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as others:
            yield others
            others.execute("SELECT 1")  # a restart would have closed it: "server closed the connection unexpectedly"
        assert _start_time(admin) == started


def _start_time(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def _declare_until_refused(greedy: psycopg.Connection, query: str, most: int) -> tuple[int, Exception | None]:
    """Cursors WITH HOLD of `query`, one statement (one commit) each, until one is refused: (kept, the refusal)."""
    for n in range(most):
        try:
            greedy.execute(f"DECLARE c{n} CURSOR WITH HOLD FOR {query}")
        except psycopg.Error as refused:
            return n, refused
    return most, None


@pytest.mark.parametrize("login", LOGINS)
def test_a_logins_cursors_past_its_memory_get_out_of_memory_and_the_server_serves_on(
    stack_env: dict[str, str], vault: RunningVault, login: str
) -> None:
    with _server_watched(stack_env), psycopg.connect(stack_env[login], autocommit=True) as greedy:
        greedy.execute("SET work_mem = '256MB'")
        started = time.monotonic()
        kept, refused = _declare_until_refused(greedy, IN_MEMORY, MOST_IN_MEMORY)
        took = time.monotonic() - started
        # Before: all 8 kept (1.6 GB in one backend; unbounded, the kernel killed it and the server restarted).
        assert isinstance(refused, errors.OutOfMemory), (kept, refused)
        assert kept >= 3, kept  # ~600 MB of its own: the bound leaves a session room for real work
        assert greedy.execute("MOVE FORWARD ALL IN c0").statusmessage == "MOVE 209715"  # its session and cursors go on
        issue_fresh_ip(stack_env, vault)  # a Tokenize of a new value: read, insert, audit append
    print(f"{login}: {kept} cursors of ~200 MB kept, the next refused out of memory after {took:.1f} s")


@pytest.mark.parametrize("login", LOGINS)
def test_a_logins_temporary_files_stop_at_temp_file_limit_and_others_still_write(
    stack_env: dict[str, str], vault: RunningVault, login: str
) -> None:
    with _server_watched(stack_env), psycopg.connect(stack_env[login], autocommit=True) as greedy:
        with pytest.raises(errors.InsufficientPrivilege):  # a superuser's setting
            greedy.execute("SET temp_file_limit = -1")
        started = time.monotonic()
        kept, refused = _declare_until_refused(greedy, SPILLED, MOST_SPILLED)
        took = time.monotonic() - started
        # Before: all 5 kept (1.3 GB of temporary files; unbounded, the disk filled and the checkpointer PANICked).
        assert isinstance(refused, errors.ConfigurationLimitExceeded), (kept, refused)
        assert "temp_file_limit" in str(refused)
        assert kept == 3, kept  # 3 x ~270 MB held; the 4th would pass 1GB
        assert greedy.execute("SHOW temp_file_limit").fetchone() == ("1GB",)  # deploy/postgres/tokenvault.conf's
        issue_fresh_ip(stack_env, vault)  # others still write while it holds its files
    print(f"{login}: {kept} spilled cursors of ~270 MB kept, the next refused by temp_file_limit after {took:.1f} s")
