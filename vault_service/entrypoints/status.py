"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import grpc

from vault_service.domain.errors import (
    AuditCopyRefused,
    AuditReportRunning,
    AuditReportTooLarge,
    AuditReportTooLong,
    AuditUnavailable,
    DatabaseUnavailable,
    InvalidRequest,
    InvalidValue,
    KekVersionsInUse,
    KeptCopiesDiffer,
    KeyJobRunning,
    KeyJobStopped,
    KeysUnavailable,
    NextFingerprintsAltered,
    PermissionDenied,
    RateLimited,
    RotationUnderWay,
    StoredValueAltered,
    TokenNotFound,
    Unauthenticated,
    VaultError,
)

_CODES: dict[type[VaultError], grpc.StatusCode] = {
    # State, not the request, is wrong: run rewrap / reindex first (before their base, InvalidRequest).
    KekVersionsInUse: grpc.StatusCode.FAILED_PRECONDITION,
    RotationUnderWay: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidValue: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    TokenNotFound: grpc.StatusCode.NOT_FOUND,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    KeysUnavailable: grpc.StatusCode.UNAVAILABLE,
    AuditUnavailable: grpc.StatusCode.UNAVAILABLE,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DatabaseUnavailable: grpc.StatusCode.UNAVAILABLE,
    StoredValueAltered: grpc.StatusCode.DATA_LOSS,
    KeyJobRunning: grpc.StatusCode.FAILED_PRECONDITION,
    KeyJobStopped: grpc.StatusCode.ABORTED,
    AuditReportRunning: grpc.StatusCode.FAILED_PRECONDITION,
    AuditCopyRefused: grpc.StatusCode.FAILED_PRECONDITION,
    AuditReportTooLarge: grpc.StatusCode.FAILED_PRECONDITION,
    AuditReportTooLong: grpc.StatusCode.DEADLINE_EXCEEDED,
    KeptCopiesDiffer: grpc.StatusCode.FAILED_PRECONDITION,
    NextFingerprintsAltered: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_of(error: VaultError) -> grpc.StatusCode:
    """The gRPC status code for a domain error (INTERNAL for anything unexpected)."""
    for error_type, code in _CODES.items():
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL
