"""At a login rotation, the next login's slots taken by someone else is said at ERROR (attack 35, N4).

The watchdog holds every slot of the login it is logged in as (attack 33, A4); the login the Vault agent renders
next is anyone's with a copy of the rendered credentials until the watchdog moves to it - after Vault drops the old
one. A copy that takes every slot of the next login keeps the watchdog out for good, every rule off. Before, it said
that only as one WARNING "a look failed" (InsufficientPrivilege, the drop): the "too many connections for role"
refusals that followed were the same kind and never logged. Now the first refusal for slots taken, after the start
too, is an ERROR naming the login (once per episode; LockWatchdogLooksFailing pages after 90 s).

Real PostgreSQL (a cluster of the test's own), the real watchdog reading its DSN file, logins made as Vault makes them,
the file rendered as the agent renders it, the drop as Vault's revocation.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import Postgres
from devstack.procs import free_port, stop_pid, wait_until
from devstack.services import start_lock_watchdog
from tests.integration.test_lock_watchdog import _lines
from tests.integration.test_lock_watchdog_dsn_file import _render, _sessions, _vault_login, private_postgres

__all__ = ["private_postgres"]

_SLOTS_TAKEN = "every connection slot of it is taken by sessions not this watchdog's"


def _said(log_file: Path) -> list[dict[str, object]]:
    return [line for line in _lines(log_file) if _SLOTS_TAKEN in str(line.get("message"))]


@pytest.mark.timeout(60)
def test_the_next_logins_slots_taken_by_a_copy_at_a_rotation_are_said_at_error_naming_the_login(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    pg = private_postgres
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    log_file = tmp_path / "lock_watchdog.log"
    env = {"TOKENVAULT_WATCHDOG_DSN_FILE": str(dsn_file), "TOKENVAULT_WATCHDOG_METRICS_PORT": str(free_port())}
    with contextlib.ExitStack() as stack, psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        first_dsn, _ = _vault_login(admin, pg, "v-watchdog-first")
        _render(dsn_file, first_dsn)
        pid = start_lock_watchdog(env, log_file)
        stack.callback(stop_pid, pid)
        wait_until(lambda: len(_sessions(admin, "v-watchdog-first")) == 3, "its slots held", 10, pid, log_file)
        second_dsn, _ = _vault_login(admin, pg, "v-watchdog-second")
        _render(dsn_file, second_dsn)  # the agent renders the next login
        copies = [stack.enter_context(psycopg.connect(second_dsn, autocommit=True)) for _ in range(3)]
        admin.execute('DROP ROLE "v-watchdog-first"')  # Vault's revocation: its sessions left alive
        wait_until(lambda: bool(_said(log_file)), "the slots taken said", 8, pid, log_file)
        time.sleep(1.0)  # four more looks, each refused
        copies_alive = sum(1 for c in copies if c.execute("SELECT 1").fetchone() == (1,))
        lines = _said(log_file)
    print(f"N4: the copy's {copies_alive}/3 sessions of the next login alive; said: {lines}")
    assert copies_alive == 3  # the watchdog cannot end them: it is not logged in as that login
    assert len(lines) == 1, lines  # once per episode
    assert lines[0]["level"] == "ERROR" and lines[0]["login"] == "v-watchdog-second", lines
