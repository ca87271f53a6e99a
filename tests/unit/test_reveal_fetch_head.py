"""A reveal record after an erase record of the same token: counted by what its fetch saw, else by the 3 s rule.

Since attack 43's A43-1 fix a Detokenize record's outcome says the audit log's newest id its fetch saw; verify
counts it after an erasure exactly when that id is at or past the erase record's. Records written before keep
REVEAL_IN_FLIGHT (3 s).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vault_service.domain.audit import AuditEvent, AuditRecord, fetch_head, with_fetch_head
from vault_service.service.audit_verify import _revealed_after_erasure

ERASED_AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TOKEN_HASH = b"h" * 16
ERASURES = {TOKEN_HASH: (ERASED_AT, 40)}  # erase record 40


def _reveal(seconds_after: float, head: int | None) -> AuditRecord:
    outcome = with_fetch_head("ok: 1 revealed, 0 refused", head)
    event = AuditEvent("fraud-investigator", "detokenize", outcome, 1, "CASE-1", "ip", revealed=(TOKEN_HASH,))
    return AuditRecord(41, ERASED_AT + timedelta(seconds=seconds_after), event, b"p" * 32, b"r" * 32)


def test_the_outcome_carries_the_fetched_head_and_only_a_well_formed_one_is_read() -> None:
    assert with_fetch_head("ok: 1 revealed, 0 refused", 39) == "ok: 1 revealed, 0 refused; fetch saw records up to 39"
    assert fetch_head(with_fetch_head("refused: PurposeHoldsOwnValue", 7)) == 7
    assert with_fetch_head("ok: 1 revealed, 0 refused", None) == "ok: 1 revealed, 0 refused"
    for outcome in ("ok: 1 revealed, 0 refused", "ok; fetch saw records up to 07", "ok; fetch saw records up to 1 x"):
        assert fetch_head(outcome) is None


def test_a_fetch_that_saw_the_erase_record_counts_however_soon_and_one_before_it_never() -> None:
    assert _revealed_after_erasure(_reveal(0.02, 40), ERASURES)  # A43-1: within 3 s, the fetch saw the erasure
    assert _revealed_after_erasure(_reveal(0.02, 41), ERASURES)
    assert not _revealed_after_erasure(_reveal(60, 39), ERASURES)  # fetched before the erasure, audited late


def test_records_without_the_head_keep_the_three_second_rule() -> None:
    assert not _revealed_after_erasure(_reveal(2.5, None), ERASURES)
    assert _revealed_after_erasure(_reveal(3.5, None), ERASURES)
