"""A long round that keeps progressing is not cut off (R18-4); a round cut off is started over, not resumed (R19-1).

Review 18, R18-4: the watchdog bounded the whole round at 6 intervals. A segment longer than a
round could read in that time (the rows of every replica since this one's oldest remembered row,
which the others keep extending) was cut every round, each round started over, and the replica
refused reveals until restarted. Now each page read re-arms the watchdog (a held statement is
still cut within the limit: test_audit_upkeep_anchored_rows.py). A round cut off is not resumed
from its last page (84ffdf5 did that): the database owner held a page past the limit, then deleted
or rewrote a row of this replica's below the page, re-linking at most up to it, and the resumed
round exported the head with nothing missing (review 19, R19-1). The next round reads the segment
from the oldest remembered row again. With fakes of the store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, chained_records, upkeep_with
from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.audit import AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import DatabaseUnavailable
from vault_service.domain.segment_check import SegmentRow
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.metering import TokenizeMeter
from vault_service.service.round_watchdog import RoundWatchdog


class _OneRowPages(FakeChainStore):
    """A segment read one row a page, each page taking `page_seconds`; `fail_after` makes that page's read fail once.

    A page read while the watchdog severs the connections raises, as the real read does.
    """

    def __init__(self, count: int, page_seconds: float = 0.0, fail_after: int | None = None) -> None:
        super().__init__(chained_records(count))
        self.page_seconds = page_seconds
        self.fail_after = fail_after
        self.reads: list[int] = []  # the `after_id` of every page read

    def segment(self, after_id: int, head: ChainHead, own: Sequence[tuple[int, bytes]], rows: int) -> list[SegmentRow]:
        self.reads.append(after_id)
        time.sleep(self.page_seconds)
        if self.released.is_set():  # severed meanwhile: the read raises, as on a connection shut at its socket
            self.released.clear()
            raise DatabaseUnavailable("the vault database is unavailable; retry later")
        if after_id == self.fail_after:
            self.fail_after = None
            raise DatabaseUnavailable("the vault database is unavailable; retry later")
        return super().segment(after_id, head, own, 1)


def _first_row_remembered(store: FakeChainStore) -> AppendedRows:
    rows, first = AppendedRows(), store.records[0]
    rows.remember([(first.record_id, (first.prev_hash, first.row_hash))])
    return rows


def test_a_round_progressing_steadily_for_longer_than_the_limit_is_not_cut_and_exports() -> None:
    # 10 pages of 0.3 limits each: 3 limits in all, but never one limit without a page read.
    store = _OneRowPages(10, page_seconds=0.15)
    rows, failed, exported = _first_row_remembered(store), list[int](), list[Checkpoint]()
    upkeep = upkeep_with(
        FakeAuditLog(),
        store,
        TokenizeMeter(),
        exported,
        [],
        appended=rows,
        on_failed=lambda: failed.append(1),
        interval=0.1,
        round_limit=0.5,
    )
    started = time.monotonic()
    upkeep.start()
    while not exported and time.monotonic() - started < 8:
        time.sleep(0.02)
    upkeep.stop()
    assert exported, f"the round was cut {store.severed} time(s) and never exported"
    assert store.severed == 0 and failed == []
    assert len(rows) == 0


def test_a_round_cut_off_part_way_is_started_over_by_the_next_round() -> None:
    # Not resumed from its last page (review 19, R19-1): the next round reads from the oldest remembered row.
    store = _OneRowPages(10, fail_after=5)
    rows, exported = _first_row_remembered(store), list[Checkpoint]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows)
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
    assert store.reads == [0, 1, 2, 3, 4, 5] and len(rows) == 1
    store.reads.clear()
    made = upkeep.run_once()
    assert store.reads == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], store.reads
    assert made is not None and exported == [made] and made.missing == ()
    assert len(rows) == 0


def _cut_after_row_5(rows: AppendedRows, missing: list[int]) -> tuple[_OneRowPages, AuditUpkeep, list[Checkpoint]]:
    """An upkeep remembering rows 1-3 of a 10-row chain, whose first round was cut after reading rows 1-5."""
    store, exported = _OneRowPages(10, fail_after=5), list[Checkpoint]()
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in store.records[:3]])
    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows, on_rows_missing=missing.append
    )
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
    assert store.reads == [0, 1, 2, 3, 4, 5]
    return store, upkeep, exported


def test_an_own_row_rewritten_below_where_a_cut_round_got_and_relinked_only_up_to_there_is_named() -> None:
    # Review 19, R19-1: the owner holds a page so the round is cut after row 5, then rewrites row 3
    # (this replica's) and re-links rows 3-5 only: row 6 still links to the old row 5. A round
    # resumed from row 5 saw nothing and forgot row 3; one read from row 1 breaks at row 6.
    rows, missing = AppendedRows(), list[int]()
    store, upkeep, exported = _cut_after_row_5(rows, missing)
    store.records = [*store.records[:2], *_relinked(store.records[1], store.records[2:5]), *store.records[5:]]
    made = upkeep.run_once()
    # The chain breaks below the head, so every remembered row is named (3 counted), as before 84ffdf5.
    assert missing == [3] and made is not None and exported[-1].missing == (1, 2, 3), exported


def test_an_own_row_deleted_below_where_a_cut_round_got_is_named() -> None:
    # Review 19, R19-1: row 3 (this replica's) deleted after the cut, nothing re-linked.
    rows, missing = AppendedRows(), list[int]()
    store, upkeep, exported = _cut_after_row_5(rows, missing)
    store.records = [r for r in store.records if r.record_id != 3]
    made = upkeep.run_once()
    # The chain breaks below the head, so every remembered row is named (3 counted), as before 84ffdf5.
    assert missing == [3] and made is not None and exported[-1].missing == (1, 2, 3), exported


def test_an_own_row_rewritten_after_a_cut_and_relinked_to_the_head_is_named() -> None:
    rows, missing = AppendedRows(), list[int]()
    store, upkeep, exported = _cut_after_row_5(rows, missing)
    # The owner rewrites row 3 (one of this replica's) and re-chains every row after it.
    store.records = [*store.records[:2], *_relinked(store.records[1], store.records[2:])]
    made = upkeep.run_once()
    assert missing == [1] and made is not None and exported[-1].missing == (3,), exported


def _relinked(before: AuditRecord, records: list[AuditRecord]) -> list[AuditRecord]:
    """`records` with other events, chained after `before` as the database's trigger would."""
    out, prev = [], before.row_hash
    for record in records:
        event = replace(record.event, purpose="INC-forged")
        row_hash = chain_hash_v2(prev, record.record_id, record.at, event)
        out.append(replace(record, event=event, prev_hash=prev, row_hash=row_hash))
        prev = row_hash
    return out


def test_the_watchdog_counts_the_limit_from_the_last_progress_and_the_ceiling_from_the_start() -> None:
    now, reports = [0.0], list[tuple[float, bool]]()
    watchdog = RoundWatchdog(10.0, lambda seconds, first: reports.append((seconds, first)), 2.0, lambda: now[0], 50.0)
    watchdog.begin()
    for now[0] in (9.0, 18.0, 27.0, 36.0, 45.0):
        watchdog.check()
        watchdog.progress()
    assert reports == []  # 45 s in all, never 10 s without progress
    now[0] = 50.0
    watchdog.check()
    assert reports == [(50.0, True)]  # the ceiling
    assert watchdog.end() is True
    watchdog.begin()
    now[0] = 59.0
    watchdog.progress()
    now[0] = 69.0
    watchdog.check()
    assert reports[-1] == (10.0, True)  # 10 s since the last progress
