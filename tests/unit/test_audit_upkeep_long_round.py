"""A long round that keeps progressing is not cut off, and a round cut off is resumed, not started over (R18-4).

Review 18, R18-4: the watchdog bounded the whole round at 6 intervals. A segment longer than a
round could read in that time (the rows of every replica since this one's oldest remembered row,
which the others keep extending) was cut every round, each round started over, and the replica
refused reveals until restarted. Now each page read re-arms the watchdog (a held statement is
still cut within the limit: test_audit_upkeep_anchored_rows.py), and a round cut off leaves its
check to the next one. With fakes of the store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, chained_records, upkeep_with
from vault_service.domain.anchoring import AppendedRows, SegmentRow
from vault_service.domain.audit import AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import DatabaseUnavailable
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


def test_a_round_cut_off_part_way_is_resumed_from_its_last_page_by_the_next_round() -> None:
    store = _OneRowPages(10, fail_after=5)
    rows, exported = _first_row_remembered(store), list[Checkpoint]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows)
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
    assert store.reads == [0, 1, 2, 3, 4, 5] and len(rows) == 1
    store.reads.clear()
    made = upkeep.run_once()
    assert store.reads == [5, 6, 7, 8, 9], "the next round started over instead of going on from row 5"
    assert made is not None and exported == [made] and made.missing == ()
    assert len(rows) == 0


def test_a_resumed_round_still_finds_a_row_remembered_since_that_its_pages_did_not_look_for() -> None:
    # Row 3 is remembered after the first round read past it (committed before the head it read):
    # the next round may not go on from beyond it, or it would be reported missing though held.
    store = _OneRowPages(10, fail_after=5)
    rows, exported, missing = _first_row_remembered(store), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows, on_rows_missing=missing.append
    )
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
    late = store.records[2]
    rows.remember([(late.record_id, (late.prev_hash, late.row_hash))])
    store.reads.clear()
    made = upkeep.run_once()
    assert store.reads[0] == 2, store.reads  # from the last page before row 3
    assert made is not None and made.missing == () and missing == [] and len(rows) == 0


def test_a_resumed_round_whose_chain_no_longer_links_to_its_last_page_reads_it_all_again() -> None:
    # Rewritten from row 5 on after the first round read it: the row after the mark does not link.
    # The round then reads the segment from the start, so it finds what a fresh round finds: the
    # appended row 1 held by an unbroken chain (the rewrite of rows no checkpoint anchors yet is
    # not this replica's row). Were it cut off on the break, row 1 would be reported missing.
    store = _OneRowPages(10, fail_after=5)
    rows, exported, missing = _first_row_remembered(store), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows, on_rows_missing=missing.append
    )
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
    store.records = [*store.records[:4], *_relinked(store.records[3], chained_records(10)[4:])]
    store.reads.clear()
    made = upkeep.run_once()
    assert store.reads == [5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], store.reads
    assert missing == [] and made is not None and exported[-1].missing == () and len(rows) == 0


def test_a_resumed_round_reports_an_appended_row_rewritten_since_as_a_fresh_round_does() -> None:
    store = _OneRowPages(10, fail_after=5)
    rows, exported, missing = AppendedRows(), list[Checkpoint](), list[int]()
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in store.records[:3]])
    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=rows, on_rows_missing=missing.append
    )
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_once()
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
