"""Hash versions along the audit chain (attack 17, finding 1): known ones only, version 1 never after version 2,
and a version-1 row with the fields version 1 does not hash as every row before migration 0006 has them.

One rule (`HashVersions`), read the same by audit-verify (`first_broken_record`) and the upkeep's segment check.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from vault_service.domain.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    chain_hash,
    chain_hash_v2,
    first_break,
    first_broken_record,
)
from vault_service.domain.checkpoints import ChainHead
from vault_service.domain.segment_check import SegmentCheck, SegmentRow

_T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
_ERASE = AuditEvent("privacy-officer", "erase", "ok", 1, "GDPR-2026-1111", "ip", "1000", "ab" * 32, (b"k" * 16,))
_PLAIN = AuditEvent("analyst", "detokenize", "ok", 1, "INC-1", "ip")


def _chain(rows: list[tuple[int, AuditEvent]]) -> list[AuditRecord]:
    """Records chained with each row's hash version (1: as the service hashed before 0006; else 2)."""
    records, prev = [], GENESIS_HASH
    for n, (version, event) in enumerate(rows, start=1):
        at = _T0 + timedelta(seconds=n)
        row_hash = chain_hash(prev, at, event) if version == 1 else chain_hash_v2(prev, n, at, event)
        records.append(AuditRecord(n, at, event, prev, row_hash, hash_version=version))
        prev = row_hash
    return records


def test_version_1_rows_before_every_version_2_row_verify() -> None:
    assert first_broken_record(_chain([(1, _PLAIN), (1, _PLAIN), (2, _PLAIN), (2, _ERASE)])) is None


def test_a_version_1_row_after_a_version_2_row_is_tampered_though_it_hashes() -> None:
    plain_erase = replace(_ERASE, client_serial="", client_cert_sha256="", revealed=())
    broken = first_break(_chain([(2, _PLAIN), (1, plain_erase), (2, _PLAIN)]))
    assert broken is not None and broken[0] == 2 and "hash version 1 after version-2 rows" in broken[1]


def test_a_version_1_row_naming_a_certificate_or_tokens_is_tampered_even_first() -> None:
    for event in (_ERASE, replace(_PLAIN, client_serial="deadbeef"), replace(_PLAIN, revealed=(b"k" * 16,))):
        broken = first_break(_chain([(1, _PLAIN), (1, event)]))
        assert broken is not None and broken[0] == 2 and "no row before migration 0006 had" in broken[1]


def test_a_hash_version_no_vault_writes_is_tampered() -> None:
    records = _chain([(2, _PLAIN), (2, _PLAIN)])
    records[1] = replace(records[1], hash_version=3)  # verified as version 2 before: its hash still matches
    broken = first_break(records)
    assert broken is not None and broken[0] == 2 and "hash version 3" in broken[1]


def test_the_upkeeps_segment_check_takes_no_version_1_row_after_its_own_rows() -> None:
    plain_erase = replace(_ERASE, client_serial="", client_cert_sha256="", revealed=())
    chain = _chain([(2, _PLAIN), (2, _PLAIN), (1, plain_erase), (2, _PLAIN)])
    own = chain[1]
    check = SegmentCheck(ChainHead(4, chain[-1].row_hash, 4, chain[-1].at), {2: (own.prev_hash, own.row_hash)})
    rows = [SegmentRow(2, own.prev_hash, own.row_hash)] + [
        SegmentRow(r.record_id, r.prev_hash, r.row_hash, r) for r in chain[2:]
    ]
    assert not check.add(rows)
    assert check.broken_at == 3 and check.missing() == (2,)
