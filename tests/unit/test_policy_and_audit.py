"""Access policy parsing and decisions; the audit hash chain."""

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash, first_broken_record
from vault_service.domain.errors import InvalidValue, PermissionDenied, Unauthenticated
from vault_service.domain.policy import RevealLevel, load_policy, parse_policy
from vault_service.domain.token_types import TokenType

REPO = Path(__file__).resolve().parents[2]


def test_shipped_policy_gives_etl_tokenize_only_and_analyst_masked_device_ids() -> None:
    policy = load_policy(REPO / "config" / "vault-policy.toml")
    policy.check_tokenize("etl-service", TokenType.IP)
    assert not policy.may_detokenize_anything("etl-service")
    assert policy.reveal_level("analyst", TokenType.IP) is RevealLevel.PLAIN
    assert policy.reveal_level("analyst", TokenType.DEVICE_ID) is RevealLevel.MASKED
    with pytest.raises(PermissionDenied):
        policy.check_tokenize("analyst", TokenType.IP)


def test_unknown_and_anonymous_clients_are_unauthenticated_and_known_ones_only_denied() -> None:
    policy = parse_policy({"clients": {"a": {"tokenize": ["ip"]}}})
    with pytest.raises(Unauthenticated, match="unknown to the vault policy"):
        policy.permissions("stranger")
    with pytest.raises(Unauthenticated, match="no client identity"):
        policy.permissions(None)
    with pytest.raises(PermissionDenied, match="may not tokenize device_id"):
        policy.check_tokenize("a", TokenType.DEVICE_ID)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"clients": {"a": {"tokenize": ["email"]}}},
        {"clients": {"a": {"detokenize": {"ip": "everything"}}}},
        {"clients": {"a": {"tokenise": ["ip"]}}},
    ],
)
def test_malformed_policies_are_rejected_with_a_reason(document: dict[str, object]) -> None:
    with pytest.raises(InvalidValue):
        parse_policy(document)


def _chain(count: int) -> list[AuditRecord]:
    records, prev = [], GENESIS_HASH
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count):
        event = AuditEvent("analyst", "detokenize", "ok", i + 1, "case-1", "ip")
        at = start + timedelta(seconds=i)
        row_hash = chain_hash(prev, at, event)
        records.append(AuditRecord(i + 1, at, event, prev, row_hash, hash_version=1))
        prev = row_hash
    return records


def test_intact_audit_chain_verifies() -> None:
    assert first_broken_record(_chain(5)) is None


def test_edited_audit_row_is_reported_as_the_first_broken_one() -> None:
    records = _chain(5)
    records[2] = dataclasses.replace(records[2], event=dataclasses.replace(records[2].event, item_count=999))
    assert first_broken_record(records) == 3


def test_deleted_audit_row_breaks_the_chain() -> None:
    records = _chain(5)
    del records[1]
    assert first_broken_record(records) == 3


def test_row_hash_encoding_is_stable_so_existing_logs_keep_verifying() -> None:
    # The canonical form, written out by hand: keys sorted, no spaces, non-ASCII escaped.
    at = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
    event = AuditEvent("analyst", "detokenize", "ok: 1 revealed, 0 refused", 1, 'case "42" \u00e9', "ip")
    canonical = (
        '{"action":"detokenize","at":"2026-11-23T09:30:15.123456+00:00","client":"analyst",'
        '"item_count":1,"outcome":"ok: 1 revealed, 0 refused","purpose":"case \\"42\\" \\u00e9","token_types":"ip"}'
    )
    assert chain_hash(GENESIS_HASH, at, event) == hashlib.sha256(GENESIS_HASH + canonical.encode()).digest()
