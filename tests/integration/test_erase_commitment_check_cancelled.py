"""The erase-row commitment check at start, cancelled or locked out, is an outage - never tampering (review 47, R47-11).

Any session of the vault's own database role may cancel (`pg_cancel_backend`) the queries of every other session of
that role (attack 48, A48-1). Before the fix, a starting replica whose read of the signed checkpoints was cancelled
refused to start with the tampering wording ("the erased-token set ... would be the database owner's choice ...
report it to the security team"). Now it checks again after each of START_CHECK_PAUSES, logs each try at WARNING,
and when every try failed says the check could not complete (EraseRowsUnchecked); with the cancels over, it starts.

Real OpenBao and PostgreSQL; the check's read held on a lock by the owner and cancelled by a sibling session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, own_database
from tests.integration.erase_rows import UNANCHORED
from vault_service.service.erase_commitment_check import EraseCommitmentCheck
from vault_service.service.maintenance import EraseRowsUnchecked, EraseRowsUncommitted, KeyMaintainer

__all__ = ["own_database"]

CANCEL_THE_READ = (  # run as the vault's own role: its sessions' queries are its to cancel
    "SELECT count(pg_catalog.pg_cancel_backend(a.pid)) FROM pg_catalog.pg_stat_activity a"
    " WHERE a.usename = current_user AND a.pid <> pg_catalog.pg_backend_pid() AND a.state = 'active'"
    " AND a.query LIKE '%vault.audit_checkpoints WHERE (erase_count IS NOT NULL%'"
)


@contextmanager
def cancelled_reads(env: dict[str, str]) -> Iterator[list[int]]:
    """The checkpoints table locked by the owner, and every read of the committed checkpoints cancelled meanwhile."""
    done = threading.Event()
    hits = [0]

    def loop() -> None:
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as sibling:
            while not done.is_set():
                row = sibling.execute(CANCEL_THE_READ).fetchone()
                hits[0] += int(row[0]) if row else 0
                done.wait(0.02)

    with as_owner(env) as owner, owner.transaction():
        owner.execute("LOCK TABLE vault.audit_checkpoints IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield hits
        finally:
            done.set()
            thread.join(10)


def test_a_cancelled_commitment_check_at_start_is_an_outage_not_tampering(
    own_database: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = own_database
    with running_vault(env, **UNANCHORED) as replica:
        wired = replica.wired

        def starting() -> KeyMaintainer:  # as the service's start wires it, the erase-row check included
            return KeyMaintainer(
                wired.keys, wired.token_store, wired.vault.cache, lambda *_: None, 3600.0, wired.vault.erased,
                commitments=EraseCommitmentCheck(wired.audit, lambda checkpoint: True),
            )  # fmt: skip

        refused = starting()
        with (
            cancelled_reads(env) as hits,
            caplog.at_level(logging.WARNING),
            pytest.raises(EraseRowsUnchecked) as unchecked,  # old code: EraseRowsUncommitted (tampering)
        ):
            refused.start()
        assert hits[0] >= 3  # every try cancelled
        assert not isinstance(unchecked.value, EraseRowsUncommitted)
        assert "cannot check the erase rows against the signed audit checkpoints before serving" in str(unchecked.value)
        assert "security team" not in str(unchecked.value)
        warned = [r for r in caplog.records if "commitment check could not complete at start" in r.getMessage()]
        assert len(warned) >= 2 and all(r.levelno == logging.WARNING for r in warned)
        started = starting()
        started.start()  # the cancels over: it starts
        started.stop()
