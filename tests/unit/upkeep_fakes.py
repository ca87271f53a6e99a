"""Fakes of the audit upkeep's ports (the checkpoint store, the signer) and a chain of real rows, for its unit tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.unit.fakes import FakeAuditLog
from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint, IdSequence
from vault_service.domain.database_probe import ProbeAnswer
from vault_service.domain.segment_check import SegmentRow
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.metering import RefusalAuditor, TokenizeMeter


class FakeSigner:
    """Signs with a made-up signature that `upkeep_with`'s `genuine` accepts."""

    key_name = "k"

    def sign(self, data: bytes) -> str:
        return "sig:" + data.hex()


class FakeCheckpointStore:
    """A chain head that grows on demand, and a checkpoint table that refuses what is not newer (as 0007 does)."""

    def __init__(self) -> None:
        self.head_id = 0
        self.stored: list[Checkpoint] = []
        self.planted = 0
        self.beyond = 0  # a row planted beyond the id sequence (0: none)
        self.cache, self.increment = 1, 1
        self.fail_head: Exception | None = None
        self.fail_sequence: Exception | None = None
        self.severed = 0  # times the watchdog severed the upkeep's connections
        self.released = threading.Event()  # set by `sever`: a statement held until then raises
        self.probe_answer = ProbeAnswer.SILENT  # how the database meets a probe (SILENT: an outage)

    def id_sequence(self) -> IdSequence:
        if self.fail_sequence is not None:
            raise self.fail_sequence
        return IdSequence(max(self.beyond, self.head_id), self.head_id, self.cache, self.increment)

    def head(self, since: ChainHead | None = None) -> ChainHead | None:
        if self.fail_head is not None:
            raise self.fail_head
        if not self.head_id:
            return None
        return ChainHead(self.head_id, bytes([self.head_id % 256]) * 32, self.head_id, datetime.now(UTC))

    def last_checkpoint_head(self) -> int:
        return max([self.planted, *(c.head.head_id for c in self.stored)])

    def newest_checkpoint(self) -> Checkpoint | None:
        if self.planted > max([0, *(c.head.head_id for c in self.stored)]):
            head = ChainHead(self.planted, bytes([self.planted % 256]) * 32, self.planted, datetime.now(UTC))
            return Checkpoint(head, "k", "vault:v1:planted")
        return self.stored[-1] if self.stored else None

    def committed_checkpoints(self, above: int, below: int | None, rows: int) -> list[Checkpoint]:
        heads = (c for c in reversed(self.stored) if c.head.erasures is not None and c.head.head_id > above)
        return [c for c in heads if below is None or c.head.head_id < below][:rows]

    def segment(self, after_id: int, head: ChainHead, own: Sequence[tuple[int, bytes]], rows: int) -> list[SegmentRow]:
        raise AssertionError("no upkeep here checks appended rows")

    def holds_erase_commitments(self) -> bool:
        return True

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        if checkpoint.head.head_id <= self.last_checkpoint_head():
            raise AssertionError("the database refuses a checkpoint that is not newer than its newest")
        self.stored.append(checkpoint)
        return True

    def sever(self) -> int:
        self.severed += 1
        self.released.set()
        return 1

    def probe_database(self) -> ProbeAnswer:
        return self.probe_answer


def upkeep_with(
    audit: FakeAuditLog,
    store: FakeCheckpointStore,
    meter: TokenizeMeter,
    exported: list[Checkpoint],
    planted: list[int],
    rows_planted: list[int] | None = None,
    **hooks: Any,
) -> AuditUpkeep:
    """An upkeep exporting into `exported`, telling `planted`, `rows_planted` and any other `hooks` (on_refused=...)."""
    rows_planted = [] if rows_planted is None else rows_planted
    return AuditUpkeep(
        audit,
        store,
        FakeSigner(),
        meter,
        RefusalAuditor(audit),
        exported.append,
        on_planted=lambda: planted.append(1),
        genuine=lambda checkpoint: checkpoint.signature == FakeSigner().sign(checkpoint.head.message()),
        on_sequence_tampered=lambda: rows_planted.append(1),
        **hooks,
    )


class FakeChainStore(FakeCheckpointStore):
    """A chain of real rows: its head, and the links the segment read gives."""

    def __init__(self, records: list[AuditRecord]) -> None:
        super().__init__()
        self.records = records
        self.head_id = records[-1].record_id

    def head(self, since: ChainHead | None = None) -> ChainHead | None:
        if self.fail_head is not None:
            raise self.fail_head
        last = self.records[-1]
        return ChainHead(last.record_id, last.row_hash, len(self.records), datetime.now(UTC))

    def segment(self, after_id: int, head: ChainHead, own: Sequence[tuple[int, bytes]], rows: int) -> list[SegmentRow]:
        shown = [r for r in self.records if after_id < r.record_id <= head.head_id][:rows]
        return [
            SegmentRow(r.record_id, r.prev_hash, r.row_hash, None if (r.record_id, r.row_hash) in own else r)
            for r in shown
        ]


def chained_records(count: int) -> list[AuditRecord]:
    """`count` reveal rows chained as the database chains them (hash v2), ids 1 to `count`."""
    prev, records = GENESIS_HASH, []
    for n in range(1, count + 1):
        event = AuditEvent("analyst", "detokenize", "ok: 1 revealed, 0 refused", 1, f"INC-{n}", "ip")
        at = datetime(2026, 12, 4, 9, n, tzinfo=UTC)
        records.append(AuditRecord(n, at, event, prev, chain_hash_v2(prev, n, at, event)))
        prev = records[-1].row_hash
    return records
