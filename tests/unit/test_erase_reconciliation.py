"""reconcile_erasures: every erased token named by exactly one erase row, every named token erased.

The integration tests (test_who_saw_verified.py, test_erase_reconciled_upgrade.py) run the real
attack through the database; these cover the bookkeeping: rows before erase rows named tokens,
two reads of the erased tokens around the log's, and the findings' wording (no token in them).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.crypto import DataKey
from vault_service.service.erase_reconciliation import reconcile_erasures
from vault_service.service.ports import ErasedToken
from vault_service.service.revealing import reveal_hash

KEY = DataKey(1, os.urandom(32))
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _erased(token: str, seconds: float) -> ErasedToken:
    return ErasedToken(token, "ip", _at(seconds))


def _erase_row(record_id: int, seconds: float, erased: int, *named: str) -> AuditRecord:
    event = AuditEvent(
        client="privacy-officer",
        action="erase",
        outcome=f"ok: {erased} erased, 0 not erased",
        item_count=erased,
        purpose=f"GDPR-{record_id}",
        revealed=tuple(reveal_hash(KEY, token) for token in named),
    )
    return AuditRecord(record_id, _at(seconds), event, b"", b"")


def _reveal_row(record_id: int, seconds: float, token: str) -> AuditRecord:
    event = AuditEvent("analyst", "detokenize", "ok", 1, "CASE-1", revealed=(reveal_hash(KEY, token),))
    return AuditRecord(record_id, _at(seconds), event, b"", b"")


def _reasons(
    records: list[AuditRecord], before: list[ErasedToken], after: list[ErasedToken] | None = None
) -> list[str]:
    result = reconcile_erasures(records, before, before if after is None else after, [KEY])
    return [f.reason for f in result.findings]


def test_genuine_erasures_reconcile() -> None:
    erased = [_erased("ip_a", 1), _erased("ip_b", 1), _erased("ip_c", 5)]
    records = [_reveal_row(1, 0, "ip_a"), _erase_row(2, 1.5, 2, "ip_a", "ip_b"), _erase_row(3, 5.2, 1, "ip_c")]
    result = reconcile_erasures(records, erased, erased, [KEY])
    assert result.consistent and (result.named, result.before_naming) == (3, 0)


def test_a_row_naming_a_token_not_erased_and_the_erased_token_unnamed_are_findings() -> None:
    erased = [_erased("ip_a", 1)]
    reasons = _reasons([_erase_row(7, 1.5, 1, "ip_b")], erased)
    assert reasons[0].startswith("erase record 7 names 1 token(s) that are not erased")
    assert reasons[1] == "an erased ip token (erased at 2026-12-03T12:00:01+00:00) is named by no erase record"
    assert not any("ip_" in reason for reason in reasons)


def test_a_token_named_twice_even_within_one_row_is_a_finding() -> None:
    erased = [_erased("ip_a", 1), _erased("ip_b", 1)]
    reasons = _reasons([_erase_row(4, 1.5, 2, "ip_a", "ip_a")], erased)
    assert reasons[0].startswith("erase records 4, 4 all name an erased ip token")
    assert reasons[1].endswith("is named by no erase record")


def test_a_row_naming_fewer_tokens_than_it_says_it_erased_is_a_finding() -> None:
    erased = [_erased("ip_a", 1)]
    reasons = _reasons([_erase_row(2, 1.5, 1, "ip_a"), _erase_row(3, 2, 1)], erased)
    assert reasons == ["erase record 3 says it erased 1 token(s) but names 0"]


def test_erasures_before_erase_rows_named_tokens_are_counted() -> None:
    erased = [_erased("ip_old1", 1), _erased("ip_old2", 3), _erased("ip_new", 9)]
    records = [_erase_row(1, 1.1, 1), _erase_row(2, 3.1, 1), _erase_row(5, 9.1, 1, "ip_new")]
    result = reconcile_erasures(records, erased, erased, [KEY])
    assert result.consistent and (result.named, result.before_naming) == (1, 2)


def test_an_unnamed_erasure_newer_than_every_row_before_naming_is_a_finding() -> None:
    # The serving role erased ip_hidden naming ip_old, the token an old row erased.
    erased = [_erased("ip_old", 1), _erased("ip_hidden", 9)]
    reasons = _reasons([_erase_row(1, 1.1, 1), _erase_row(5, 9.1, 1, "ip_old")], erased)
    assert reasons == ["an erased ip token (erased at 2026-12-03T12:00:09+00:00) is named by no erase record"]


def test_an_old_style_row_added_to_cover_a_hidden_erasure_does_not_add_up() -> None:
    erased = [_erased("ip_old", 1), _erased("ip_hidden", 9)]
    records = [_erase_row(1, 1.1, 1), _erase_row(4, 9.05, 1), _erase_row(5, 9.1, 1, "ip_old")]
    reasons = _reasons(records, erased)
    assert reasons == [
        "erase records before erase records named tokens say they erased 2 token(s),"
        " but 1 erased token(s) are named by no erase record"
    ]


def test_an_erasure_committed_while_the_log_was_read_is_no_finding() -> None:
    # Read before the log: ip_a only; the log: ip_a's and ip_b's rows; read after: ip_a, ip_b, ip_c.
    before = [_erased("ip_a", 1)]
    after = [*before, _erased("ip_b", 2), _erased("ip_c", 3)]
    records = [_erase_row(1, 1.1, 1, "ip_a"), _erase_row(2, 2.1, 1, "ip_b")]
    assert _reasons(records, before, after) == []
