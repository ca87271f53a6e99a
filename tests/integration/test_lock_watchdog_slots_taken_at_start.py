"""The lock watchdog started while every slot of its login is taken says so, instead of "an outage" (review 36, R36-6).

Attack 33, A4 left a window at its start: a copy of its credentials in before it holds the login's slots (CONNECTION
LIMIT 3), and the watchdog cannot log in to end them. It tries again, as for an outage - but it logged "the database
cannot be reached (an outage, not a setting)" at each try, while the server had answered `too many connections for
role`: whoever read it looked at the database, not at who holds the login. Now an ERROR names the slots taken and
what to do; once they are let go it starts. Cluster of its own; the watchdog's start check in this process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import psycopg
import pytest

from devstack.postgres import Postgres
from tests.integration.test_lock_watchdog import private_postgres
from vault_service.entrypoints.lock_watchdog import LockWatchdog

__all__ = ["private_postgres"]


@pytest.mark.timeout(60)
def test_a_start_behind_a_login_whose_every_slot_is_taken_names_the_slots_and_starts_once_they_are_free(
    private_postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    pg = private_postgres
    watchdog = LockWatchdog(pg.watchdog_dsn)
    stop = threading.Event()
    started: list[bool] = []
    caplog.set_level(logging.WARNING, logger="lock_watchdog")
    with contextlib.ExitStack() as closing:
        copies = [psycopg.connect(pg.watchdog_dsn, autocommit=True) for _ in range(3)]  # the copy: every slot
        for conn in copies:
            closing.callback(conn.close)
        waiting = threading.Thread(target=lambda: started.append(watchdog.wait_for_database(stop)), daemon=True)
        waiting.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("slot" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
        said = [(r.levelname, r.getMessage()) for r in caplog.records]
    waiting.join(20)  # the copies closed: its next try logs in
    stop.set()
    watchdog.login.close()
    print(f"SLOTS-TAKEN: said {said}; started {started}")
    assert started == [True], "it did not start once the slots were let go"
    assert said and all(level == "ERROR" for level, _ in said), said
    assert "every connection slot of this watchdog's login is taken" in said[0][1]
    assert not any("an outage" in message for _, message in said), said
