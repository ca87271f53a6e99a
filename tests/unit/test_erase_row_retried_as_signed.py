"""A failing erase row read again is learned only as the row it was when it failed (attack 50, A50-3).

A log of erase rows behind a fake read: a row E fails its first read (a field changed, its stored hash kept - the
hash a signed tally counts); the owner then shows E forged and self-consistent (another token's hash, its row hash
recomputed) for the read that retries it. It must not be learned, and the replica must be told (`changed`); once E
is put back it is learned. A signed failing row that no longer reads as an erase row is kept, not dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from vault_service.domain.audit import AuditEvent, AuditRecord, record_hash
from vault_service.service.erased_tokens import ErasedTokens
from vault_service.service.ports import EraseRow, EraseRowsPage

ERASED, LIVE = b"t" * 16, b"l" * 16


def _row(record_id: int, hashed: bytes, purpose: str = "GDPR-1", stored: bytes | None = None) -> EraseRow:
    """An erase row naming `hashed`; its stored row hash that of its fields unless `stored` is given."""
    event = AuditEvent("privacy-officer", "erase", "ok: 1 erased", 1, purpose, "ip", revealed=(hashed,))
    unsigned = AuditRecord(record_id, datetime(2026, 12, 6, tzinfo=UTC), event, b"\x01" * 32, b"")
    return EraseRow(record_id, dataclasses.replace(unsigned, row_hash=stored or record_hash(unsigned)), None)


class _Log:
    """Erase rows by id and the log's newest id as the owner leaves them for each read."""

    def __init__(self) -> None:
        self.rows: dict[int, EraseRow] = {}
        self.newest = 0

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        ids = sorted(i for i in self.rows if after_id < i <= self.newest)[:limit]
        return EraseRowsPage([self.rows[i] for i in ids], self.newest, len(ids) == limit)

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        pass


def _failed_then_out_of_the_window(vouched: bool) -> tuple[_Log, ErasedTokens, bytes]:
    """E (row 10) read first with a field changed, its stored hash kept; then the window moved past it."""
    log, erased = _Log(), ErasedTokens()
    genuine = _row(10, ERASED)
    assert genuine.record is not None
    log.rows[10] = _row(10, ERASED, purpose="GDPR-1x", stored=genuine.record.row_hash)
    log.newest = 20
    assert erased.learn(log) == 0
    if vouched:
        erased.vouch_read(20)  # the start-up read's tally matched the signed commitment
    erased.anchored(5000)
    log.newest = 5000
    erased.learn(log)
    assert erased.failing_ids() == {10} and not erased.changed()
    return log, erased, genuine.record.row_hash


def test_a_failing_row_forged_for_its_retry_is_not_learned_and_the_genuine_row_is_once_put_back() -> None:
    log, erased, _ = _failed_then_out_of_the_window(vouched=True)
    log.rows[10] = _row(10, LIVE)  # forged: a live token's hash, its row hash recomputed
    assert erased.learn(log) == 0
    assert len(erased) == 0 and erased.failing_ids() == {10} and erased.changed() == [10]
    log.rows[10] = _row(10, ERASED)  # put back
    assert erased.learn(log) == 1
    assert erased.failing_ids() == set() and erased.changed() == []


def test_a_failing_row_within_the_window_shown_forged_is_not_learned_either() -> None:
    log, erased = _Log(), ErasedTokens()
    genuine = _row(10, ERASED)
    assert genuine.record is not None
    log.rows[10] = _row(10, ERASED, purpose="GDPR-1x", stored=genuine.record.row_hash)
    log.newest = 20
    erased.learn(log)
    log.rows[10] = _row(10, LIVE)
    assert erased.learn(log) == 0 and erased.changed() == [10]


def test_a_signed_failing_row_that_no_longer_reads_as_an_erase_row_is_kept_and_named() -> None:
    log, erased, _ = _failed_then_out_of_the_window(vouched=True)
    del log.rows[10]  # relabelled for the retrying read
    erased.learn(log)
    assert erased.failing_ids() == {10} and erased.changed() == [10]
    log.rows[10] = _row(10, ERASED)
    assert erased.learn(log) == 1 and erased.changed() == []


def test_an_unsigned_failing_row_that_no_longer_reads_as_an_erase_row_is_dropped_as_before() -> None:
    log, erased, _ = _failed_then_out_of_the_window(vouched=False)
    del log.rows[10]  # e.g. a reveal row relabelled 'erase' for one read, put back
    erased.learn(log)
    assert erased.failing_ids() == set() and erased.changed() == []


def test_a_running_rounds_matching_tally_replaces_the_hash_the_first_read_saw() -> None:
    log, erased, signed = _failed_then_out_of_the_window(vouched=False)
    erased.vouch({10: signed, 11: b"x" * 32})  # 11 is no failing row: ignored
    assert erased.failing_ids() == {10}
    log.rows[10] = _row(10, LIVE)
    assert erased.learn(log) == 0 and erased.changed() == [10]
