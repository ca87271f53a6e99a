"""The audit reports the vault makes for the security team's certificate (tokenvault.v1.AuditReports).

The vault verifies its audit log with its own credentials against its own exported checkpoint
copy; the caller gets the verdict (and, for who-saw, the rows naming a token: client, time,
purpose, outcome, never a value). A report reads the whole log, so its call gets a deadline of
its own (REPORT_DEADLINE_SECONDS unless the caller gives one); the vault ends it there too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from tokenvault_api.v1 import audit_reports_pb2, audit_reports_pb2_grpc
from tokenvault_client.errors import ProtocolError, VaultClientError

REPORT_DEADLINE_SECONDS = 300.0
"""A report's deadline when the caller gives none: the most the vault takes for one."""


@dataclass(frozen=True)
class AuditVerdict:
    """What the vault's verification found: `intact`, else the first record concerned and why; `lines` as printed."""

    intact: bool
    first_row: int
    finding: str
    rows: int
    checkpoints: int
    lines: tuple[str, ...]


@dataclass(frozen=True)
class WhoSawRow:
    """One audited reveal, erasure or who-saw question of the token asked about: never a value."""

    record_id: int
    at: str
    action: str
    client: str
    client_serial: str
    purpose: str
    outcome: str


def _verdict(message: audit_reports_pb2.AuditVerdict) -> AuditVerdict:
    return AuditVerdict(
        message.intact, message.first_row, message.finding, message.rows, message.checkpoints, tuple(message.lines)
    )


def audit_verify(
    channel: grpc.Channel,
    max_copy_lag: float | None,
    deadline: float,
    typed: Callable[[grpc.RpcError], VaultClientError],
    exported_copy: bytes | None = None,
) -> AuditVerdict:
    """Have the vault verify its audit log (against `exported_copy`'s text when given); typed errors raised."""
    request = audit_reports_pb2.AuditVerifyRequest()
    if max_copy_lag is not None:
        request.max_copy_lag_seconds = max_copy_lag
    if exported_copy is not None:
        request.exported_copy = exported_copy
    try:
        return _verdict(audit_reports_pb2_grpc.AuditReportsStub(channel).Verify(request, timeout=deadline))
    except grpc.RpcError as error:
        raise typed(error) from None


def audit_who_saw(
    channel: grpc.Channel,
    token: str,
    max_copy_lag: float | None,
    deadline: float,
    typed: Callable[[grpc.RpcError], VaultClientError],
    purpose: str = "",
) -> tuple[AuditVerdict, list[WhoSawRow]]:
    """Have the vault say who saw `token` (and why it is asked, `purpose`): the verdict and the rows."""
    request = audit_reports_pb2.WhoSawRequest(token=token, purpose=purpose)
    if max_copy_lag is not None:
        request.max_copy_lag_seconds = max_copy_lag
    verdict: AuditVerdict | None = None
    rows: list[WhoSawRow] = []
    try:
        for page in audit_reports_pb2_grpc.AuditReportsStub(channel).WhoSaw(request, timeout=deadline):
            if page.HasField("verdict"):
                verdict = _verdict(page.verdict)
            rows += [
                WhoSawRow(r.record_id, r.at, r.action, r.client, r.client_serial, r.purpose, r.outcome)
                for r in page.rows
            ]
    except grpc.RpcError as error:
        raise typed(error) from None
    if verdict is None:
        raise ProtocolError(grpc.StatusCode.INTERNAL, "the vault's who-saw answer held no verdict")
    return verdict, rows


def _lag(max_copy_lag: float | None) -> dict[str, float]:
    return {} if max_copy_lag is None else {"max_copy_lag_seconds": max_copy_lag}
