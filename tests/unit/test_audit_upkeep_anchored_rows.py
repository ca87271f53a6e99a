"""The rows a round checks stay remembered until their head is exported; a round the database holds is cut off.

Attack 17, finding 2: the upkeep forgot the rows it had checked before the checkpoint of their
head was exported, and a lock held the checkpoint INSERT past every timeout, so the database
owner rewrote a served reveal's row unseen. Finding 3: the server-side timeout was trapped, and
a hanging round was counted nowhere. With fakes of the store (the real database:
tests/integration/test_audit_upkeep_held_round.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, chained_records, upkeep_with
from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.audit import AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import DatabaseUnavailable
from vault_service.service.metering import TokenizeMeter
from vault_service.service.round_watchdog import RoundWatchdog


def _remembered(records: list[AuditRecord]) -> AppendedRows:
    rows = AppendedRows()
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records])
    return rows


def _rewritten(record: AuditRecord) -> AuditRecord:
    """`record` turned into a refused call naming no token, re-hashed as the database's own function would."""
    event = replace(record.event, outcome="refused: RateLimited", purpose="", revealed=())
    return replace(record, event=event, row_hash=chain_hash_v2(record.prev_hash, record.record_id, record.at, event))


class _HeldInsert(FakeChainStore):
    """A checkpoint INSERT the database holds (a lock) until the watchdog severs it; then it fails, or is stored."""

    def __init__(self, records: list[AuditRecord], stored_anyway: bool = False) -> None:
        super().__init__(records)
        self.held = True
        self.stored_anyway = stored_anyway  # the lock released after the sever: the server commits it

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        if not self.held:
            return super().add_checkpoint(checkpoint)
        if self.stored_anyway:
            self.stored.append(checkpoint)
        raise DatabaseUnavailable("the vault database is unavailable; retry later")


def test_a_checked_row_stays_remembered_until_its_head_is_exported_so_a_rewrite_meanwhile_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = chained_records(3)
    rows, missing, exported = _remembered(records[2:]), list[int](), list[Checkpoint]()
    store = _HeldInsert(records)
    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows, on_rows_missing=missing.append
    )
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()  # checked, signed; the INSERT held, then cut off
    assert sorted(rows.remembered()) == [3], "the checked row was forgotten though no checkpoint was exported"
    store.records[2] = _rewritten(records[2])  # the owner rewrites the reveal's row, re-hashed
    store.held = False
    with caplog.at_level(logging.ERROR):
        made = upkeep.run_once()
    assert missing == [1] and made is not None and len(exported) == 1
    assert exported[0].head == made.head and exported[0].missing == (3,)
    assert "(ids 3)" in caplog.text
    assert len(rows) == 0  # named in the exported checkpoint: now forgotten


def test_a_checkpoint_the_database_stored_after_its_round_was_cut_off_is_exported_before_the_rows_are_forgotten() -> (
    None
):
    # The INSERT went through once the lock was released, after the round gave up: signed and
    # stored, exported by no one. Forgetting the rows on its word would leave them anchored only
    # in a table the owner can delete that checkpoint from.
    records = chained_records(2)
    rows, exported = _remembered(records), list[Checkpoint]()
    store = _HeldInsert(records, stored_anyway=True)
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows)
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
    assert len(rows) == 2 and len(store.stored) == 1 and exported == []
    store.held = False
    again = upkeep.run_once()
    assert exported == store.stored == [again]  # the stored checkpoint, exported by this process
    assert len(rows) == 0


def test_a_checkpoint_is_of_the_head_the_round_checked_though_the_row_changes_before_it_is_stored() -> None:
    records = chained_records(2)
    rows, exported = _remembered(records), list[Checkpoint]()

    class _RewrittenDuringTheInsert(FakeChainStore):
        def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
            self.records[1] = _rewritten(self.records[1])
            return super().add_checkpoint(checkpoint)

    store = _RewrittenDuringTheInsert(list(records))
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows)
    made = upkeep.run_once()
    assert made is not None and exported == [made]
    assert made.head.head_hash == records[1].row_hash != store.records[1].row_hash


def test_a_round_the_database_holds_is_counted_failed_logged_with_the_ids_and_severed_within_its_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = chained_records(3)
    rows, failed, exported = _remembered(records[1:]), list[float](), list[Checkpoint]()

    class _HeldHead(FakeChainStore):
        """The head read sleeps until its connection is severed (a trapped statement timeout), then raises."""

        def head(self, since: ChainHead | None = None) -> ChainHead | None:
            if not self.released.is_set():
                self.released.wait(30)
                raise DatabaseUnavailable("the vault database is unavailable; retry later")
            return super().head(since)

    store = _HeldHead(records)
    upkeep = upkeep_with(
        FakeAuditLog(),
        store,
        TokenizeMeter(),
        exported,
        [],
        appended=rows,
        on_failed=lambda: failed.append(time.monotonic()),
        interval=0.05,
        round_limit=0.5,
    )
    with caplog.at_level(logging.ERROR):
        started = time.monotonic()
        upkeep.start()
        while not exported and time.monotonic() - started < 10:
            time.sleep(0.02)
        upkeep.stop()
    assert exported, "the upkeep never anchored again after the held round"
    assert store.severed >= 1 and len(failed) == store.severed  # counted by the watchdog, not again as it ends
    assert failed[0] - started < 0.5 + 2, "the held round was not counted within its limit"
    assert "audit upkeep round failed: held for" in caplog.text
    assert "2 audit row(s) this service appended (ids 2 to 3) wait unchecked" in caplog.text
    assert len(rows) == 0


def test_the_watchdog_reports_a_round_once_past_its_limit_then_every_repeat_and_a_round_within_it_never() -> None:
    now, reports = [0.0], list[tuple[float, bool]]()
    watchdog = RoundWatchdog(10.0, lambda seconds, first: reports.append((seconds, first)), 2.0, lambda: now[0])
    watchdog.begin()
    now[0] = 9.9
    watchdog.check()
    assert reports == []
    now[0] = 10.0
    watchdog.check()
    watchdog.check()
    now[0] = 12.5
    watchdog.check()
    assert reports == [(10.0, True), (12.5, False)]
    assert watchdog.end() is True
    watchdog.begin()
    now[0] = 20.0
    assert watchdog.end() is False
    watchdog.check()
    assert len(reports) == 2


def test_the_watchdog_thread_outlives_a_report_that_raises() -> None:
    calls = threading.Event()
    seen = list[int]()

    def report(seconds: float, first: bool) -> None:
        seen.append(1)
        if len(seen) >= 2:
            calls.set()
        raise OSError("sever failed")

    watchdog = RoundWatchdog(0.01, report, 0.01)
    watchdog.start(tick=0.01)
    watchdog.begin()
    assert calls.wait(5)
    watchdog.stop()
