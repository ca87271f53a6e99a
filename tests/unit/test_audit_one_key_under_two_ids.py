"""`audit verify` fails when the chain names one check value for two key ids (attack 24, F1).

A retired data key inserted again under a new id opened what crypto-shredding had shredded;
migration 0027 refuses it to the serving role, and the data-key rows the database writes for
every key change (with each key's check value) show it when the owner does it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.crypto import DataKey
from vault_service.service.audit_keys_check import audit_keys_problem, one_key_under_two_ids

_CHECK_4 = "2938e39a" * 4
_CHECK_6 = "11aa22bb" * 4


def _key_rows(*outcomes: str) -> list[AuditRecord]:
    """Data-key rows as the database writes them, one per outcome (the action does not matter here)."""
    at = datetime(2026, 12, 5, tzinfo=UTC)
    return [
        AuditRecord(n, at, AuditEvent("tokenvault_vault", "data-key-update", outcome, 1), b"", b"")
        for n, outcome in enumerate(outcomes)
    ]


def test_a_retired_key_named_again_under_a_new_id_is_a_keys_problem() -> None:
    records = _key_rows(
        f"ok: 4 encryption active check {_CHECK_4}",
        f"ok: 4 encryption decrypt_only check {_CHECK_4}, 6 encryption active check {_CHECK_6}",
        f"ok: 4 encryption retired check {_CHECK_4}",
        f"ok: 6 encryption decrypt_only check {_CHECK_6}",
        f"ok: 7 encryption active check {_CHECK_4}",
    )
    problem = one_key_under_two_ids(records)
    assert problem is not None and "data keys 4 and 7 are one key" in problem
    assert audit_keys_problem(records, []) == problem


def test_a_key_named_in_each_of_its_changes_is_one_key_under_one_id() -> None:
    records = _key_rows(
        f"ok: 4 encryption active check {_CHECK_4}",
        f"ok: 4 encryption decrypt_only check {_CHECK_4}, 6 encryption active check {_CHECK_6}",
        f"ok: 4 encryption retired check {_CHECK_4}",
    )
    assert one_key_under_two_ids(records) is None


def test_one_key_under_two_ids_does_not_hide_an_audit_key_that_is_not_the_one_recorded() -> None:
    """Review 23, R23-2: the first verdict was returned alone, masking any later real key problem."""
    loaded = DataKey(3, b"\x07" * 32)
    at = datetime(2026, 12, 5, tzinfo=UTC)
    made = AuditEvent("tokenvault_vault", "data-key-insert", f"ok: 3 audit active check {'00' * 16}", 1)
    records = [  # key 3's insert row names a check value that is not the loaded key 3's
        AuditRecord(-1, at, made, b"", b""),
        *_key_rows(f"ok: 4 encryption active check {_CHECK_4}", f"ok: 7 encryption active check {_CHECK_4}"),
    ]
    problem = audit_keys_problem(records, [loaded])
    assert problem is not None
    assert "data keys 4 and 7 are one key" in problem and "audit key 3 as loaded is not the key" in problem
