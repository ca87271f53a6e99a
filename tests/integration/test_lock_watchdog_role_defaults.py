"""Defaults a copy of the watchdog's credentials sets for its login do not blind the watchdog (attack 35, N7/N7b).

Any login may set defaults for its own later sessions (`ALTER ROLE CURRENT_USER SET ...`, pg_db_role_setting), and a
copy of the watchdog's credentials needs one session, once, to do it (attack 33 A4's window at the start, or before
the watchdog ever ran). Before, the watchdog pinned only statement_timeout at log-in:
- `default_transaction_read_only = on`: every look failed (the NOTIFY rule writes its state), across restarts, and an
  analyst's listener holding the NOTIFY queue's tail was never ended;
- `role = 'tokenvault_watchdog'` (a group it is in): its sessions' current_user was the group, whose CONNECTION LIMIT
  (none) it read, so it opened no spare - one slot held, and a copy could end it and take the login (A4 again).
Its connections now pin every setting its looks depend on at connection start (libpq `options`, which take precedence
over role defaults: watchdog_login.WATCHDOG_SESSION_SETTINGS), and it reports the defaults at the start (WARNING).
Attack 38, M2's default: `local_preload_libraries` naming no library ended every session of the login at its start -
the watchdog never started, retrying as if the database were down; it now loads none.

Real PostgreSQL (a cluster of the test's own), the real watchdog process, the stack's logins.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import Postgres
from devstack.procs import wait_until
from tests.integration.test_lock_watchdog import _lines, looking_watchdog, private_postgres
from tests.integration.test_notify_queue_watchdog import _SEND, RELAY_CAP_BYTES, _queue_bytes, _there

__all__ = ["private_postgres"]

_DEFAULTS_SAID = "role or database defaults are set for this watchdog's login"
_STRANGER_ENDED = "ended a database session of this watchdog's own login that is not this watchdog's"


def _sessions(admin: psycopg.Connection, login: str) -> int:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (login,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "default",
    [
        "default_transaction_read_only = on",
        "role = 'tokenvault_watchdog'",
        "local_preload_libraries = 'm12_no_such_library'",  # attack 38, M2's: every session ended at its start
    ],
    ids=["read-only", "role", "preload"],
)
def test_a_default_a_copy_set_for_the_watchdogs_login_leaves_it_looking_holding_its_slots_and_ending_strangers(
    private_postgres: Postgres, tmp_path: Path, default: str
) -> None:
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        with psycopg.connect(pg.watchdog_dsn, autocommit=True) as copy:  # the copy's one moment
            copy.execute(f"ALTER ROLE CURRENT_USER SET {default}")
            login = copy.info.user
        stack.callback(admin.execute, f'ALTER ROLE "{login}" RESET ALL')
        limit_row = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
        limit = int(limit_row[0]) if limit_row else 0
        assert limit > 0
        stranger = stack.enter_context(  # in before the start (its own options: past M2's default)
            psycopg.connect(pg.watchdog_dsn, autocommit=True, options="-c local_preload_libraries=")
        )
        listener = stack.enter_context(contextlib.closing(psycopg.connect(pg.analyst_dsn, autocommit=True)))
        listener.execute("LISTEN q")
        listener.execute("BEGIN")
        listener.execute("SELECT 1")  # holds the queue's tail
        notifier = stack.enter_context(contextlib.closing(psycopg.connect(pg.analyst_dsn, autocommit=True)))
        pid, _, _ = stack.enter_context(looking_watchdog(pg, log_file))  # health: a look succeeded
        wait_until(lambda: stranger.closed or stranger.broken or _stranger_gone(admin, stranger), "the stranger ended",
                   5, pid, log_file)  # fmt: skip
        wait_until(lambda: _sessions(admin, login) == limit, "every slot of its login held", 5, pid, log_file)
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(pg.watchdog_dsn, autocommit=True).close()
        peak, started, ended_after = 0.0, time.monotonic(), None
        while peak < RELAY_CAP_BYTES and time.monotonic() - started < 5:
            notifier.execute(_SEND)
            peak = max(peak, _queue_bytes(admin))
            if not _there(admin, listener.info.backend_pid):
                ended_after = time.monotonic() - started
                break
            time.sleep(0.02)
        held = _sessions(admin, login)
    lines = _lines(log_file)
    warnings = [str(line.get("message"))[:60] for line in lines if line.get("level") == "WARNING"]
    print(
        f"N7 {default}: slots held {held}/{limit}; the listener ended after {ended_after} s (queue peak"
        f" {peak / 2**20:.1f} MB); warnings: {warnings}"
    )
    assert ended_after is not None, "the NOTIFY queue's holder was not ended"
    assert held == limit
    assert [line for line in lines if _STRANGER_ENDED in str(line.get("message"))]
    said = [line for line in lines if _DEFAULTS_SAID in str(line.get("message"))]
    assert len(said) == 1 and said[0]["level"] == "WARNING", said
    assert said[0]["overridden"] == default.split(" ")[0], said
    assert not [line for line in lines if "a look failed" in str(line.get("message"))]


def _stranger_gone(admin: psycopg.Connection, stranger: psycopg.Connection) -> bool:
    return not _there(admin, stranger.info.backend_pid)
