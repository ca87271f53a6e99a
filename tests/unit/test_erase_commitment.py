"""The erase-row commitment of a signed checkpoint (attack 46, A46-3): v2 message, the upkeep's walk, verify's check."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, FakeCheckpointStore, FakeSigner, chained_records
from vault_service.domain.audit import GENESIS_HASH, AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint, verify_log
from vault_service.domain.erase_commitment import NO_ERASE_ROWS, EraseCommitment
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.erase_commitments import EraseCommitments, erase_walk_heads_changed
from vault_service.service.metering import RefusalAuditor, TokenizeMeter

AT = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)


def _with_erase_rows(count: int, erase_ids: set[int]) -> list[AuditRecord]:
    """`count` rows chained as the database chains them, those of `erase_ids` erase rows."""
    prev, records = GENESIS_HASH, []
    for record in chained_records(count):
        event = record.event
        if record.record_id in erase_ids:
            event = dataclasses.replace(event, action="erase")
        at = record.at
        records.append(AuditRecord(record.record_id, at, event, prev, chain_hash_v2(prev, record.record_id, at, event)))
        prev = records[-1].row_hash
    return records


def _commitment_of(records: list[AuditRecord]) -> EraseCommitment:
    found = NO_ERASE_ROWS
    for record in records:
        if record.event.action == "erase":
            found = found.after(record.record_id, record.row_hash)
    return found


def test_a_checkpoint_with_a_commitment_signs_a_v2_message_and_is_exported_with_it() -> None:
    erasures = EraseCommitment(2, b"\x07" * 32)
    head = ChainHead(9, b"\x01" * 32, 5, AT, erasures)
    assert head.message().startswith(b"tokenvault-audit-checkpoint:v2:9:5:")
    assert head.message().endswith(b":2:" + b"07" * 32)
    assert dataclasses.replace(head, erasures=None).message().startswith(b"tokenvault-audit-checkpoint:v1:9:5:")
    checkpoint = Checkpoint(head, "k", "vault:v1:sig")
    assert Checkpoint.from_exported(checkpoint.exported()) == checkpoint


def test_the_upkeep_walk_commits_to_every_erase_row_across_rounds_and_resumes_from_a_stored_checkpoint() -> None:
    records = _with_erase_rows(12, {3, 7, 11})
    store = FakeChainStore(records)
    walk = EraseCommitments(store, lambda c: True, lambda: None, lambda: None, rows_per_round=5)
    head = store.head()
    assert head is not None
    assert walk.commit(head).erasures is None  # 5 of 12 rows walked: signed v1
    assert walk.commit(head).erasures is None
    committed = walk.commit(head)
    assert committed.erasures == _commitment_of(records)
    assert committed.erasures.count == 3
    store.stored.append(Checkpoint(committed, "k", "sig"))
    store.records = records + _with_erase_rows(14, {3, 7, 11, 13})[12:]  # two rows more, one an erase row
    fresh = EraseCommitments(store, lambda c: True, lambda: None, lambda: None)  # a restart: from the checkpoint
    later = store.head()
    assert later is not None
    assert fresh.commit(later).erasures == _commitment_of(store.records)


def test_the_upkeep_walk_signs_no_commitment_over_a_row_that_does_not_hold() -> None:
    records = _with_erase_rows(6, {2})
    relabelled = dataclasses.replace(records[1], event=dataclasses.replace(records[1].event, action="detokenize"))
    store = FakeChainStore([records[0], relabelled, *records[2:]])  # hash not recomputed: the row does not hold
    head = store.head()
    assert head is not None
    assert EraseCommitments(store, lambda c: True, lambda: None, lambda: None).commit(head).erasures is None


def test_verify_names_erase_rows_that_are_not_those_a_checkpoint_commits_to() -> None:
    records = _with_erase_rows(6, {2})
    last = records[-1]
    signer = FakeSigner()
    head = ChainHead(last.record_id, last.row_hash, len(records), AT, _commitment_of(records))
    signed = Checkpoint(head, "k", signer.sign(head.message()))
    valid = lambda message, signature: signature == signer.sign(message)  # noqa: E731
    assert verify_log(records, [signed], [], valid) is None
    lying = dataclasses.replace(head, erasures=EraseCommitment(0, NO_ERASE_ROWS.digest))
    finding = verify_log(records, [Checkpoint(lying, "k", signer.sign(lying.message()))], [], valid)
    assert finding is not None
    assert "1 erase row(s) where it signed 0" in finding.reason


def test_a_head_changed_under_the_walk_is_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    records = _with_erase_rows(6, {2})
    store = FakeChainStore(records)
    head = store.head()
    assert head is not None
    rewritten = dataclasses.replace(head, head_hash=b"\x09" * 32)  # the round read a head the walk then read changed
    before = erase_walk_heads_changed()
    walk = EraseCommitments(store, lambda c: True, lambda: None, lambda: None)
    with caplog.at_level(logging.ERROR):
        assert walk.commit(rewritten).erasures is None
        assert walk.commit(rewritten).erasures is None
    assert erase_walk_heads_changed() == before + 2
    told = [r for r in caplog.records if "was not the same row when the erase-row walk read it" in r.getMessage()]
    assert len(told) == 1
    assert "audit row 6," in told[0].getMessage()


def test_an_upkeep_committing_to_the_erase_rows_needs_a_signature_check() -> None:
    audit, store = FakeAuditLog(), FakeCheckpointStore()
    meter = TokenizeMeter()
    with pytest.raises(ValueError, match="commit_erasures needs genuine"):
        AuditUpkeep(audit, store, FakeSigner(), meter, RefusalAuditor(audit), lambda c: None, commit_erasures=True)
