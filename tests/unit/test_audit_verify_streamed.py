"""The verification streams the log by pages: it keeps only the records asked for, may stop after any page (R30-1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.crypto import DataKey
from vault_service.domain.errors import AuditReportTooLong
from vault_service.service.audit_verify import FullAuditReport, verify_audit, who_saw
from vault_service.service.erase_reconciliation import ErasureReconciliation
from vault_service.service.revealing import reveal_hash


def _log(count: int) -> list[AuditRecord]:
    records, prev = [], GENESIS_HASH
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(1, count + 1):
        action = "erase" if i == 4 else "detokenize"
        event = AuditEvent("analyst", action, "ok", 1, f"CASE-{i}", "ip", revealed=(bytes([i]) * 16,))
        at = start + timedelta(seconds=i)
        row_hash = chain_hash_v2(prev, i, at, event)
        records.append(AuditRecord(i, at, event, prev, row_hash))
        prev = row_hash
    return records


class _Paged:
    """An audit store handing out its records `size` at a time, counting the pages read."""

    def __init__(self, records: list[AuditRecord], size: int) -> None:
        self._records, self._size, self.pages = records, size, 0
        head = ChainHead(len(records), records[-1].row_hash, len(records), records[-1].at)
        self._checkpoints = [Checkpoint(head, "k", "sig:" + head.message().hex())]

    def record_pages(self, after_id: int = 0) -> Iterator[list[AuditRecord]]:
        for start in range(0, len(self._records), self._size):
            self.pages += 1
            yield self._records[start : start + self._size]

    def checkpoints(self) -> list[Checkpoint]:
        return self._checkpoints


def _valid(public_keys: Mapping[int, str], data: bytes, signature: str) -> bool:
    return signature == "sig:" + data.hex()


def test_the_report_keeps_only_the_records_of_the_tokens_asked_about_and_the_erase_records() -> None:
    store = _Paged(_log(10), 3)

    report = verify_audit(store, {}, _valid, None, keep=frozenset({bytes([3]) * 16, bytes([10]) * 16}))

    assert report.intact and report.rows == 10 and report.unanchored == 0 and store.pages == 4
    assert [r.record_id for r in report.records] == [3, 10]  # from the first page and the last
    assert [r.record_id for r in report.erase_records] == [4]


def test_a_report_stops_after_the_page_its_call_ended_in() -> None:
    store = _Paged(_log(10), 3)

    def stop_check() -> None:
        if store.pages == 2:
            raise AuditReportTooLong("the call ended")

    with pytest.raises(AuditReportTooLong):
        verify_audit(store, {}, _valid, None, stop_check=stop_check, keep=frozenset())

    assert store.pages == 2  # the rest of the log is never read


def test_who_saw_refuses_a_report_that_did_not_keep_the_tokens_records() -> None:
    key, token = DataKey(1, b"\x01" * 32), "ip_" + "W" * 22
    report = FullAuditReport(
        3,
        1,
        0,
        None,
        (),
        None,
        frozenset({bytes([9]) * 16}),
        erasures=ErasureReconciliation(named=0, before_naming=0),
        keys_problem=None,
    )
    assert report.intact
    with pytest.raises(ValueError, match="did not keep this token's records"):
        who_saw(report, [key], token)  # never "0 reveals" from a report that kept another token's records
    kept = dataclasses.replace(report, kept=frozenset({reveal_hash(key, token)}))
    assert who_saw(kept, [key], token) == []
