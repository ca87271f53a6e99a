"""Rows checked but not yet anchored (the export failing) are refused and reported as such (review 18, R18-11).

Since 98d6e6d a row stays remembered until a checkpoint of a head it was checked against is
exported, so a checkpoint file on a full volume makes the replica refuse reveals after the bound
(fail closed, right); but the refusal, `stop()`'s log and the runbooks said the rows were "not
checked" and pointed at the database. Now what the rows wait for is a field (`WaitingFor`), set by
the rounds, and the refusal says it. With fakes of the store.
"""

from __future__ import annotations

import logging

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, chained_records, upkeep_with
from vault_service.domain.anchoring import AppendedRows, AuditChecksOverdue, WaitingFor
from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.errors import DatabaseUnavailable, StorageError
from vault_service.domain.segment_check import SegmentRow
from vault_service.service.metering import TokenizeMeter


class _FullDisk(list[Checkpoint]):
    """An export whose checkpoint file cannot be written (the volume is full)."""

    def append(self, checkpoint: Checkpoint) -> None:
        raise OSError(28, "No space left on device", "/var/lib/tokenvault/checkpoints.jsonl")


def _rows_of(store: FakeChainStore, now: list[float]) -> AppendedRows:
    rows = AppendedRows(max_age=60.0, clock=lambda: now[0])
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in store.records[1:]])
    return rows


def test_rows_checked_but_never_exported_are_refused_as_waiting_for_the_export_not_as_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, now = FakeChainStore(chained_records(3)), [0.0]
    rows = _rows_of(store, now)
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), _FullDisk(), [], appended=rows)
    upkeep._safely()  # checked, signed, stored; the export fails
    assert len(rows) == 2 and rows.waiting_for is WaitingFor.EXPORT
    now[0] = 61.0
    with pytest.raises(AuditChecksOverdue) as refused:
        rows.check_open()
    assert refused.value.waiting_for is WaitingFor.EXPORT and not refused.value.database_unreachable
    assert refused.value.reason.startswith(
        "the audit upkeep checked this replica's audit rows against the chain but has not anchored them"
    ), refused.value.reason
    assert "not checked" not in str(refused.value) and "checkpoint file's volume" in str(refused.value)
    with caplog.at_level(logging.ERROR):
        upkeep.stop()
    assert "(ids 2 to 3) were checked against the chain but never anchored" in caplog.text


def test_rows_no_round_could_check_are_refused_as_unchecked() -> None:
    store, now = FakeChainStore(chained_records(3)), [0.0]
    store.fail_head = DatabaseUnavailable("the vault database is unavailable; retry later")
    rows = _rows_of(store, now)
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), [], [], appended=rows)
    upkeep._safely()
    now[0] = 61.0
    with pytest.raises(AuditChecksOverdue) as refused:
        rows.check_open()
    assert refused.value.waiting_for is WaitingFor.CHECK
    assert "has not checked this replica's audit rows for 61 s" in refused.value.reason


def test_rows_appended_after_an_export_wait_for_their_own_check() -> None:
    store, now = FakeChainStore(chained_records(3)), [0.0]
    rows = _rows_of(store, now)
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), [], [], appended=rows)
    rows.waiting_for = WaitingFor.EXPORT  # as a round whose export failed left it
    upkeep.run_once()
    assert len(rows) == 0 and rows.waiting_for is WaitingFor.CHECK


def test_a_later_round_failing_at_the_check_says_the_rows_wait_for_their_check_again() -> None:
    """After an export failed, a round whose segment read fails left the refusals saying 'checked' (R19-8)."""
    store, now = FakeChainStore(chained_records(3)), [0.0]
    rows = _rows_of(store, now)
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), _FullDisk(), [], appended=rows)
    upkeep._safely()
    after_the_export_failed = rows.waiting_for
    assert after_the_export_failed is WaitingFor.EXPORT

    def refused(*_: object, **__: object) -> list[SegmentRow]:
        raise StorageError("the vault database refused the operation")

    store.segment = refused  # type: ignore[method-assign]  # the owner's policy now fails the segment read
    upkeep._safely()
    assert rows.waiting_for is WaitingFor.CHECK
