"""The erased-token set's read window never passes what the replica can vouch for (attack 45, A45-1).

A log of erase rows behind a fake read: the owner's row at a far id within the sequence, present for one read, must
not move the next read's start past the genuine erase rows written meanwhile - whether or not that later read finds
the log's head below the far id (the head the audit upkeep anchored bounds the start; a head going back is reported
and the log read again from its start).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from vault_service.domain.audit import AuditEvent, AuditRecord, record_hash
from vault_service.service.erased_tokens import ErasedTokens, erase_read_window_tampered
from vault_service.service.ports import EraseRow, EraseRowsPage


def _erase_row(record_id: int, hashed: bytes) -> EraseRow:
    event = AuditEvent("privacy-officer", "erase", "ok: 1 erased", 1, "GDPR-1", "ip", revealed=(hashed,))
    unsigned = AuditRecord(record_id, datetime(2026, 12, 6, tzinfo=UTC), event, b"\x01" * 32, b"")
    record = AuditRecord(record_id, unsigned.at, event, unsigned.prev_hash, record_hash(unsigned))
    return EraseRow(record_id, record, None)


class _Log:
    """Erase rows by id and the log's newest id (within the sequence) as the owner leaves them for each read."""

    def __init__(self) -> None:
        self.rows: dict[int, EraseRow] = {}
        self.newest = 0
        self.reads: list[int] = []

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        self.reads.append(after_id)
        ids = sorted(i for i in self.rows if after_id < i <= self.newest)[:limit]
        return EraseRowsPage([self.rows[i] for i in ids], self.newest, len(ids) == limit)

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        pass


def test_a_far_head_present_for_one_read_moves_no_later_read_past_the_anchored_head() -> None:
    log, erased = _Log(), ErasedTokens()
    log.newest = 100
    erased.learn(log)  # start-up
    erased.anchored(100)  # the upkeep exported a checkpoint of row 100
    log.newest = 2600  # the owner's row at 2600, the sequence moved with it, for the length of one read
    erased.learn(log)
    log.rows[1200] = _erase_row(1200, b"e" * 16)  # another replica's erasure, 2000 rows on (a busy log)
    log.newest = 3000  # the far row gone; the log's head is beyond it (nothing "went back")
    assert erased.learn(log) == 1, f"the erase row at 1200 was not read (reads started after {log.reads})"
    assert len(erased) == 1


def test_a_head_going_back_is_reported_and_the_log_read_again_from_its_start() -> None:
    log, erased = _Log(), ErasedTokens()
    log.newest = 100
    erased.learn(log)
    erased.anchored(10**15)  # the far row was anchored too (`audit verify --exported` names it once removed)
    log.newest = 10**15
    erased.learn(log)
    told = erase_read_window_tampered()
    log.rows[150] = _erase_row(150, b"f" * 16)
    log.newest = 5000  # the far row removed: the head below the one read before
    assert erased.learn(log) == 1
    assert erase_read_window_tampered() == told + 1
    assert log.reads[-1] == 0  # read again from the log's start
