"""who-saw: filtered from the verified records only; erasures pass their tokens' keyed hashes (round 8)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.checkpoints import Finding
from vault_service.domain.crypto import DataKey
from vault_service.domain.policy import parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.service.audit_verify import AuditNotVerified, AuditReport, FullAuditReport, who_saw
from vault_service.service.erase_reconciliation import ErasureReconciliation
from vault_service.service.keyring import KeyManager
from vault_service.service.revealing import reveal_hash
from vault_service.service.vault import TokenVault

_OLD, _NEW = DataKey(1, b"\x01" * 32), DataKey(2, b"\x02" * 32)
_TOKEN, _OTHER = "ip_" + "W" * 22, "ip_" + "X" * 22


def _record(record_id: int, action: str, purpose: str, revealed: tuple[bytes, ...]) -> AuditRecord:
    event = AuditEvent("someone", action, "ok", len(revealed), purpose, "ip", revealed=revealed)
    return AuditRecord(record_id, datetime.now(UTC), event, b"", b"")


def _report(records: list[AuditRecord], finding: Finding | None = None) -> FullAuditReport:
    """A full verification's report on `records`: no erasure to reconcile, the audit keys as recorded."""
    erasures = ErasureReconciliation(named=0, before_naming=0)
    return FullAuditReport(len(records), 0, len(records), finding, tuple(records), erasures=erasures, keys_problem=None)


def test_who_saw_finds_reveals_and_erasures_under_every_audit_key_in_the_records_verified() -> None:
    records = [
        _record(1, "detokenize", "CASE-1", (reveal_hash(_OLD, _OTHER), reveal_hash(_OLD, _TOKEN))),
        _record(2, "detokenize", "CASE-2", (reveal_hash(_NEW, _OTHER),)),
        _record(3, "erase", "GDPR-3", (reveal_hash(_NEW, _TOKEN),)),
        _record(4, "tokenize", "", ()),
    ]
    seen = who_saw(_report(records), [_OLD, _NEW], _TOKEN)
    assert [(r.record_id, r.event.action) for r in seen] == [(1, "detokenize"), (3, "erase")]


def test_who_saw_makes_no_report_from_a_log_that_did_not_verify() -> None:
    records = [_record(1, "detokenize", "CASE-1", (reveal_hash(_NEW, _TOKEN),))]
    with pytest.raises(AuditNotVerified):
        who_saw(_report(records, Finding(1, "the hash chain breaks here")), [_NEW], _TOKEN)


def test_who_saw_makes_no_report_from_a_verification_that_did_not_check_the_audit_keys() -> None:
    records = [_record(1, "detokenize", "CASE-1", (reveal_hash(_NEW, _TOKEN),))]
    chain_only = AuditReport(len(records), 0, len(records), None, tuple(records))  # what `verify_audit` makes
    assert chain_only.intact
    with pytest.raises(AuditNotVerified, match="audit keys and erasures were not checked"):
        who_saw(chain_only, [_NEW], _TOKEN)  # type: ignore[arg-type]  # mypy refuses it at the call site too


def test_an_erasure_hands_the_store_the_keyed_hash_of_each_token_it_may_erase_in_order() -> None:
    policy = parse_policy({"clients": {"etl": {"tokenize": ["ip"]}, "officer": {"erase": ["ip"]}}})
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    store = FakeTokenStore()
    vault = TokenVault(store, keys, policy, FakeAuditLog())
    first, second = vault.tokenize("etl", [(TokenType.IP, "10.8.0.1"), (TokenType.IP, "10.8.0.2")])
    device = "dev_" + "D" * 22  # a token type the officer may not erase: neither erased nor named
    outcomes = vault.erase("officer", [str(second), device, str(first)], "GDPR-2026-0042")
    assert outcomes[0] is None and outcomes[1] is not None and outcomes[2] is None
    (event,) = store.erase_events
    audit_key = keys.ring.audit_key
    assert list(event.revealed) == [reveal_hash(audit_key, str(second)), reveal_hash(audit_key, str(first))]
