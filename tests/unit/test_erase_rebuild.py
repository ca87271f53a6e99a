"""A running replica's rebuild of its erased-token set, checked against the signed commitment (attack 49, A49-1).

A log of erase rows behind a fake read and a signed commitment to the genuine ones up to a head: the rebuild after a
mismatch (review 47, R47-1) may drop a hash only when its read matches that commitment, never learns from an
unmatched read what the commitment covers, and never drops a hash on the strength of rows no commitment covers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from vault_service.domain.audit import AuditEvent, AuditRecord, record_hash
from vault_service.domain.erase_commitment import NO_ERASE_ROWS, EraseCommitment, EraseTally
from vault_service.service.erased_tokens import ErasedTokens
from vault_service.service.ports import EraseRow, EraseRowsPage

HEAD = 100
"""The head of the newest signed checkpoint."""


def _erase_row(record_id: int, hashed: bytes) -> EraseRow:
    event = AuditEvent("privacy-officer", "erase", "ok: 1 erased", 1, "GDPR-1", "ip", revealed=(hashed,))
    unsigned = AuditRecord(record_id, datetime(2026, 12, 6, tzinfo=UTC), event, b"\x01" * 32, b"")
    record = AuditRecord(record_id, unsigned.at, event, unsigned.prev_hash, record_hash(unsigned))
    return EraseRow(record_id, record, None)


class _Log:
    """Erase rows by id as the owner leaves them for each read; the log's newest id."""

    def __init__(self, rows: dict[int, EraseRow]) -> None:
        self.rows = dict(rows)
        self.newest = 200

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        ids = sorted(i for i in self.rows if after_id < i <= self.newest)[:limit]
        return EraseRowsPage([self.rows[i] for i in ids], self.newest, len(ids) == limit)

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        pass


GENUINE = {10: _erase_row(10, b"e" * 16), 50: _erase_row(50, b"f" * 16)}
"""The erase rows the checkpoint at HEAD commits to."""


def _signed() -> EraseCommitment:
    commitment = NO_ERASE_ROWS
    for record_id, row in sorted(GENUINE.items()):
        assert row.record is not None
        commitment = commitment.after(record_id, row.record.row_hash)
    return commitment


def _check(tally: EraseTally) -> str | None:
    return _signed().differs(tally.value, HEAD)


def _started() -> tuple[_Log, ErasedTokens]:
    log, erased = _Log(GENUINE), ErasedTokens()
    erased.learn(log)
    assert len(erased) == 2
    return log, erased


def test_a_committed_erase_row_hidden_from_the_rebuild_read_is_kept() -> None:
    log, erased = _started()
    del log.rows[10]  # A49-1: its action reads 'reveal' for the length of the read
    problem = erased.rebuild(log, EraseTally(upto=HEAD), _check)
    assert problem is not None and "1 erase row(s) where it signed 2" in problem
    assert len(erased) == 2, "an unmatched read dropped a committed erasure (old code: 1)"


def test_an_old_reveal_row_relabelled_for_the_rebuild_read_is_not_learned() -> None:
    log, erased = _started()
    log.rows[30] = _erase_row(30, b"L" * 16)  # A49-1b: hash recomputed, the next row relinked
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is not None
    assert len(erased) == 2, "an unmatched read taught the live token's hash (old code: 3)"


def test_a_matching_read_drops_a_hash_learned_from_a_row_that_is_not_a_signed_erase_row() -> None:
    log, erased = _started()
    log.rows[60] = _erase_row(60, b"L" * 16)  # relabelled while a round read it (R47-1), put back after
    erased.learn(log)
    assert len(erased) == 3
    del log.rows[60]
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is None
    assert len(erased) == 2


def test_a_committed_erase_row_whose_fields_changed_for_the_read_keeps_its_hash() -> None:
    log, erased = _started()
    row = log.rows[10]
    assert row.record is not None
    event = dataclasses.replace(row.record.event, revealed=(b"x" * 16,))
    log.rows[10] = row._replace(record=dataclasses.replace(row.record, event=event))  # its row hash kept
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is None  # selected by id and stored hash: it matches
    assert len(erased) == 2, "the signed erase row's token was dropped while its fields were changed"


def test_rows_above_the_signed_head_are_learned_and_never_a_reason_to_drop() -> None:
    log, erased = _started()
    log.rows[150] = _erase_row(150, b"g" * 16)
    erased.learn(log)
    assert len(erased) == 3
    del log.rows[150]  # hidden in the tail no checkpoint covers
    log.rows[160] = _erase_row(160, b"h" * 16)  # another replica's new erasure
    log.rows[30] = _erase_row(30, b"L" * 16)  # and the read does not match
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is not None
    assert len(erased) == 4  # 10, 50, 150 kept; 160 learned; 30 not
    del log.rows[30]
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is None
    assert len(erased) == 4


def test_without_a_signed_commitment_the_rebuild_only_adds() -> None:
    log, erased = _started()
    del log.rows[10]
    log.rows[30] = _erase_row(30, b"L" * 16)
    assert erased.rebuild(log, None, _check) is None
    assert len(erased) == 3


def test_an_unmatched_read_learns_a_genuine_erasure_above_the_head_verified_last() -> None:
    """Review 49, R49-2: while a mismatch stands the rebuild rounds replace the rounds' reads; another replica's
    genuine erase row that a newer checkpoint covers (at HEAD) but the replica never verified (it verified up to 40)
    was never learned - its erased token handed out once the owner wrote the token's row back (A43-3)."""
    log, erased = _started()
    log.rows[60] = _erase_row(60, b"x" * 16)  # planted by the owner: the standing mismatch
    log.rows[70] = _erase_row(70, b"n" * 16)  # another replica's erasure, under the newest signed head
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check, verified=40) is not None
    assert b"n" * 16 in erased._hashes, "a genuine erasure above the verified head was not learned (old code)"
    assert {b"e" * 16, b"f" * 16} <= set(erased._hashes)  # the committed erasures below it are kept
    log.rows[30] = _erase_row(30, b"L" * 16)  # a reveal row below the verified head relabelled: still not learned
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check, verified=40) is not None
    assert b"L" * 16 not in erased._hashes


def _changed_field(row: EraseRow) -> EraseRow:
    """`row` with its outcome changed and its stored row hash kept (it fails; a tally counts its signed hash)."""
    assert row.record is not None
    event = dataclasses.replace(row.record.event, outcome=row.record.event.outcome + " ")
    return row._replace(record=dataclasses.replace(row.record, event=event))


def test_a_hash_learned_from_a_forged_version_of_a_signed_row_is_dropped_when_that_row_fails() -> None:
    """Attack 51, A51-1: row 50 forged for one read to name a live token L (its hash recomputed); for the rebuild it
    shows its signed stored hash with a field changed - the read matches, row 50 fails, and L was kept (old code)."""
    log, erased = _Log(GENUINE), ErasedTokens()
    log.rows[50] = _erase_row(50, b"L" * 16)
    erased.learn(log)
    assert set(erased._hashes) == {b"e" * 16, b"L" * 16}
    log.rows[50] = _changed_field(GENUINE[50])
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is None  # selected by id and signed stored hash
    assert b"L" * 16 not in erased._hashes, "a live token learned from a forged row was kept (old code)"
    log.rows[50] = GENUINE[50]  # put back: its genuine token learned
    erased.learn(log)
    assert set(erased._hashes) == {b"e" * 16, b"f" * 16}


def test_a_hash_first_learned_from_a_relabelled_row_is_kept_by_the_failing_signed_row_naming_it() -> None:
    """Attack 51, A51-2: a reveal row (30) naming the token of signed erase row 50 relabelled `erase` for the read
    that first reads row 50: the token's first record is 30. In the rebuild row 30 is gone and row 50 fails with its
    signed stored hash: the read matches and the token was dropped (old code), though its signed erase row names it."""
    log, erased = _Log(GENUINE), ErasedTokens()
    log.rows[30] = _erase_row(30, b"f" * 16)
    erased.learn(log)
    assert erased._hashes[b"f" * 16] == 30
    del log.rows[30]
    log.rows[50] = _changed_field(GENUINE[50])
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is None
    assert set(erased._hashes) == {b"e" * 16, b"f" * 16}, "the signed erasure of row 50 was forgotten (old code)"
    log.rows[10] = _changed_field(GENUINE[10])  # a later matched rebuild: row 10's token learned under its signed hash
    assert erased.rebuild(log, EraseTally(upto=HEAD), _check) is None
    assert set(erased._hashes) == {b"e" * 16, b"f" * 16}
