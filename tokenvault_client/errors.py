"""Typed errors of the vault client: one class per gRPC status a caller decides on.

`from_rpc_error` is the one place where a `grpc.RpcError` becomes one of these. Each error
says what went wrong in words a person can act on (which certificate, which permission,
when to retry); none ever quotes a value.
"""

from __future__ import annotations

import grpc

RETRY_AFTER_KEY = "retry-after-ms"
"""Trailing metadata the vault sets on RESOURCE_EXHAUSTED: milliseconds until the call would fit."""
NOTHING_STORED_KEY = "tokenvault-nothing-stored"
"""Trailing metadata ("1") the vault sets on a failed Tokenize it knows stored no value and issued no token
(vault_service/entrypoints/servicer.py): `VaultClientError.nothing_stored`."""
FAILED_TO_CONNECT = "failed to connect to all addresses"
"""How gRPC's client (C-core's load balancing) ends a call it could not send: every address of the channel refused
its connection (the port closed, a TLS handshake failed) and the call does not wait for ready - it fails at once
with UNAVAILABLE, never written to any connection (grpc doc/wait-for-ready.md). `never_sent`."""
GRPC_SLOTS_FULL = "Concurrent RPC limit exceeded!"
"""What gRPC's Python server answers, before any application code, when its `maximum_concurrent_rpcs`
calls are in progress (the vault's own refusals carry `retry-after-ms`)."""


class VaultClientError(Exception):
    """Base of every error the client raises; `code` is the gRPC status, `details` the server's text."""

    retryable = False
    """Whether the same call may succeed later without any change by the caller."""

    nothing_stored = False
    """The vault said (NOTHING_STORED_KEY) that the failed Tokenize stored no value and issued no token - of every
    call the client made for it (its chunks, its attempts). False claims nothing: the values may be stored (an
    answer lost, a deadline passed, a vault that does not say)."""

    def __init__(self, code: grpc.StatusCode, details: str, hint: str = "") -> None:
        self.code = code
        self.details = details
        self.hint = hint
        super().__init__(self._text())

    def _text(self) -> str:
        text = f"{self.code.name}: {self.details}" if self.details else self.code.name
        return f"{text} ({self.hint})" if self.hint else text

    def with_hint(self, hint: str) -> VaultClientError:
        """The same error with a hint appended (e.g. which certificate was presented)."""
        self.hint = f"{self.hint}; {hint}" if self.hint else hint
        self.args = (self._text(),)
        return self


class Unauthenticated(VaultClientError):
    """The vault does not know the presented certificate's name (not in its policy)."""


class PermissionDenied(VaultClientError):
    """The caller is known but its policy does not allow this action on this token type."""


class InvalidArgument(VaultClientError):
    """The request is malformed (missing purpose, too many items in one call ...)."""


class NotFound(VaultClientError):
    """Nothing is stored behind the token."""


class RateLimited(VaultClientError):
    """The caller exceeded its rate; retry after `retry_after` seconds (0: the call itself is too big)."""

    retryable = True

    def __init__(self, code: grpc.StatusCode, details: str, retry_after: float, hint: str = "") -> None:
        self.retry_after = retry_after
        super().__init__(code, details, hint)

    repeated = False
    """Set when the same call was refused again after waiting as long as the vault said."""

    done: list[object] | None = None
    """For a list split into several calls: the outcomes of the items before the refused call, in
    order (those calls were made: an erase among them took effect); None for a single call."""

    @property
    def call_too_big(self) -> bool:
        """The call carries more items than the caller's burst allows: split it, waiting will not help.

        Vaults say so with no wait (retry-after 0) or, from issue 13 on, with a message naming the
        burst limit; a call refused again after a full wait (`repeated`) is treated the same way.
        """
        return self.retry_after <= 0 or "burst limit" in self.details or self.repeated


class Unavailable(VaultClientError):
    """The vault (or its database or Vault) cannot answer now, or the connection failed."""

    retryable = True


class ServerBusy(Unavailable):
    """Every call slot of the vault process was taken when the call arrived; retried like an outage.

    gRPC refused it before any of it ran (an Erase included), so retrying is always safe.
    """


class DeadlineExceeded(VaultClientError):
    """The call did not finish within its deadline."""

    retryable = True


class Internal(VaultClientError):
    """The vault failed unexpectedly (it logs why); a later call may succeed, the client does not retry it."""

    retryable = True


class ProtocolError(VaultClientError):
    """The vault answered something this client does not understand (versions apart?)."""


_BY_CODE: dict[grpc.StatusCode, type[VaultClientError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
}


def _trailer(error: grpc.RpcError) -> tuple[tuple[str, str | bytes], ...]:
    trailing = getattr(error, "trailing_metadata", None)
    return tuple((trailing() if callable(trailing) else None) or ())


def said_nothing_stored(error: grpc.RpcError) -> bool:
    """Whether the vault's trailer says the failed call stored nothing (NOTHING_STORED_KEY)."""
    return any(key == NOTHING_STORED_KEY and value == "1" for key, value in _trailer(error))


def never_sent(error: VaultClientError) -> bool:
    """Whether the failed call was never sent: gRPC could connect to no address of the vault (FAILED_TO_CONNECT).

    Proof only of one attempt: on a channel whose retry policy covers the call, an attempt the vault saw may have
    come before it (measured: tokenvault_client/channel.py). Callers ask it of Tokenize, which no channel of this
    library retries. gRPC composes the text itself; the vault never answers it.
    """
    return error.code == grpc.StatusCode.UNAVAILABLE and error.details.startswith(FAILED_TO_CONNECT)


def retry_after_seconds(error: grpc.RpcError) -> float:
    """The server's `retry-after-ms` trailer in seconds, or 0 when absent or unreadable."""
    for key, value in _trailer(error):
        if key == RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                return 0.0
    return 0.0


_HANDSHAKE_MARKS = ("handshake", "ssl", "certificate", "socket closed")
"""How grpc describes a TLS refusal: the server closes the socket on a certificate it does not trust."""


def _hint(code: grpc.StatusCode, details: str) -> str:
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(m in lowered for m in _HANDSHAKE_MARKS):
        return (
            "the TLS handshake failed: check that the client certificate and key match and are issued by the"
            " vault's CA, and that the CA file is the one that issued the vault's server certificate"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "the certificate's common name is not a client in the vault's policy"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "the vault's policy does not allow this identity to do this; ask for the permission or use another"
    return ""


def from_rpc_error(error: grpc.RpcError) -> VaultClientError:
    """The typed error for a failed call."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = (details_of() if callable(details_of) else None) or ""
    typed: VaultClientError
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_after = retry_after_seconds(error)
        if details == GRPC_SLOTS_FULL and not retry_after:
            return ServerBusy(code, details, "every call slot of the vault process was taken; retrying")
        typed = RateLimited(code, details, retry_after)
    else:
        typed = _BY_CODE.get(code, VaultClientError)(code, details, _hint(code, details))
    typed.nothing_stored = said_nothing_stored(error)
    return typed
