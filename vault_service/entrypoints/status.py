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


NOTHING_STORED_KEY = "tokenvault-nothing-stored"
"""Trailing metadata ("1") on a failed Tokenize that the vault knows stored no value and issued no token
(VaultError.stored_nothing, service/tokenizing.py), or on a call the guard refused before it ran: the caller then
knows the call left nothing behind, where a lost or failed call without it may have stored the values (attack 41,
A41-4). Never on a call of which a transaction inserting tokens may have committed, nor on an attempt gRPC's retry
policy made after another (PREVIOUS_ATTEMPTS_KEY: that one's answer may have been lost after it stored);
tokenvault_client reads it."""
PREVIOUS_ATTEMPTS_KEY = "grpc-previous-rpc-attempts"
"""Request metadata gRPC adds to an attempt its retry policy makes after a failed one (gRPC A6)."""
NO_RETRY_PUSHBACK = ("grpc-retry-pushback-ms", "-1")
"""Trailing metadata asking the caller's gRPC not to retry (a negative server pushback, gRPC A6): sent with
NOTHING_STORED_KEY, so that the caller gets this attempt's answer - a retry of it could not say so."""


def nothing_stored_trailer(context: grpc.ServicerContext) -> list[tuple[str, str]]:
    """NOTHING_STORED_KEY with NO_RETRY_PUSHBACK for a failed call that stored nothing; none for a retried attempt."""
    if any(key == PREVIOUS_ATTEMPTS_KEY for key, _ in context.invocation_metadata() or ()):
        return []  # the attempt before it may have stored, its answer lost
    return [(NOTHING_STORED_KEY, "1"), NO_RETRY_PUSHBACK]


def status_of(error: VaultError) -> grpc.StatusCode:
    """The gRPC status code for a domain error (INTERNAL for anything unexpected)."""
    for error_type, code in _CODES.items():
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL
