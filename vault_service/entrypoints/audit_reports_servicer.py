"""The AuditReports gRPC servicer: the verified caller's audit report, its verdict and rows in, messages out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc

from tokenvault_api.v1 import audit_reports_pb2, audit_reports_pb2_grpc
from vault_service.domain.audit import AuditRecord
from vault_service.domain.errors import RateLimited, Unauthenticated, VaultError
from vault_service.domain.identity import Caller
from vault_service.entrypoints.audit_report_lines import finding_of, verdict_lines, who_saw_cells
from vault_service.entrypoints.guard import current_caller
from vault_service.entrypoints.status import status_of
from vault_service.service.audit_reports import AuditReports
from vault_service.service.audit_verify import FullAuditReport

NO_COPY = (
    "NOT checked against any copy outside the database: this vault exports its checkpoints to no file"
    " (TOKENVAULT_AUDIT_CHECKPOINT_FILE unset; they go to its log lines), and the database's owner can delete"
    " the newest rows together with their checkpoints unseen. Check the shipped copy: send it with the call"
    " (`tokenvault audit verify --exported COPY`, at most 8 MiB), or have the service account run"
    " `python -m vault_service.admin audit-verify --exported COPY` (a Job with the vault's settings)"
)
"""What a verdict says when the vault has no exported copy of its own to verify against."""
ROWS_PER_PAGE = 1000
"""Who-saw rows per message: a token revealed a million times still answers in pages of ~150 KB."""


def verdict(report: FullAuditReport, copy_given: bool) -> audit_reports_pb2.AuditVerdict:
    """The verdict as sent: intact or not, the first record concerned, why, and the lines `audit verify` prints."""
    return audit_reports_pb2.AuditVerdict(
        intact=report.intact,
        first_row=report.finding.first_row if report.finding is not None and report.finding.first_row else 0,
        finding=finding_of(report),
        rows=report.rows,
        checkpoints=report.checkpoints,
        lines=verdict_lines(report, copy_given, NO_COPY),
    )


def _caller() -> Caller:
    caller = current_caller()
    if caller is None:  # the guard admits no call without one
        raise Unauthenticated("no client identity: connect with a client certificate issued by the vault CA")
    return caller


def _lag(request: audit_reports_pb2.AuditVerifyRequest | audit_reports_pb2.WhoSawRequest) -> float | None:
    return request.max_copy_lag_seconds if request.HasField("max_copy_lag_seconds") else None


def _ended(context: grpc.ServicerContext) -> Callable[[], bool]:
    """Whether the call has ended (its caller went away, or its deadline passed): the report stops then."""
    return lambda: not context.is_active()


def _abort(context: grpc.ServicerContext, error: VaultError) -> NoReturn:
    """End the call with `error`'s status; a rate limit's with its retry-after, as TokenVault's calls do."""
    if isinstance(error, RateLimited):
        context.set_trailing_metadata((("retry-after-ms", str(int(error.retry_after * 1000))),))
    context.abort(status_of(error), str(error))


class AuditReportsServicer(audit_reports_pb2_grpc.AuditReportsServicer):
    """gRPC face of `AuditReports`: Verify (the verdict) and WhoSaw (the verdict, then the rows in pages)."""

    def __init__(self, reports: AuditReports, copy_given: bool) -> None:
        """`copy_given`: the vault exports its checkpoints (TOKENVAULT_AUDIT_CHECKPOINT_FILE) to verify against."""
        self._reports = reports
        self._copy_given = copy_given

    def Verify(
        self, request: audit_reports_pb2.AuditVerifyRequest, context: grpc.ServicerContext
    ) -> audit_reports_pb2.AuditVerdict:
        """Verify the audit log in the service for the caller: the verdict."""
        sent = request.exported_copy if request.HasField("exported_copy") else None
        try:
            report = self._reports.verify(_caller(), _lag(request), context.time_remaining(), _ended(context), sent)
        except VaultError as error:
            _abort(context, error)
        return verdict(report, self._copy_given or sent is not None)

    def WhoSaw(
        self, request: audit_reports_pb2.WhoSawRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_reports_pb2.WhoSawPage]:
        """Every reveal and erasure of the token from the verified log: the verdict, then the rows in pages."""
        try:
            answer = self._reports.who_saw(
                _caller(), request.token, _lag(request), context.time_remaining(), _ended(context), request.purpose
            )
        except VaultError as error:
            _abort(context, error)
        after = frozenset(answer.report.reveals_after_erasure)
        rows = [_row(record, record.record_id in after) for record in answer.records]
        yield audit_reports_pb2.WhoSawPage(verdict=verdict(answer.report, self._copy_given), rows=rows[:ROWS_PER_PAGE])
        for start in range(ROWS_PER_PAGE, len(rows), ROWS_PER_PAGE):
            yield audit_reports_pb2.WhoSawPage(rows=rows[start : start + ROWS_PER_PAGE])


def _row(record: AuditRecord, after_erasure: bool = False) -> audit_reports_pb2.WhoSawRow:
    _, at, action, client, serial, purpose, outcome = who_saw_cells(record, after_erasure)
    return audit_reports_pb2.WhoSawRow(
        record_id=record.record_id,
        at=at,
        action=action,
        client=client,
        client_serial="" if serial == "-" else serial,
        purpose=purpose,
        outcome=outcome,
    )
