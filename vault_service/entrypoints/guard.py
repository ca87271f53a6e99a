"""The vault's front door, as one server interceptor: size, well-formedness and identity.

Before any TokenVault method runs, the interceptor
- refuses a request body over MAX_REQUEST_BYTES, or one that does not parse (invalid UTF-8 in
  a string field included), or a call with no items at all (the limits count items, so an
  empty call would otherwise be an unmetered audit row) with INVALID_ARGUMENT;
- takes the caller from the peer certificate, strictly (`IdentityVerifier`): a certificate not
  issued directly by the client CA, or without exactly one well-formed CN, is UNAUTHENTICATED;
- audits every such refusal with what is known of the caller, throttled per peer (a peer over
  its refusal rate gets RESOURCE_EXHAUSTED and its refusals are counted, not written one by one).
The caller is handed to the servicer through `current_caller()`.

gRPC core itself refuses bodies over the server's hard limit (a little above MAX_REQUEST_BYTES)
before they are buffered; those never reach Python and are not audited.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import DecodeError

from tokenvault_api.v1 import vault_pb2
from vault_service.domain.errors import InvalidRequest, RateLimited, Unauthenticated, VaultError
from vault_service.domain.identity import Caller, IdentityVerifier
from vault_service.entrypoints.status import status_of
from vault_service.service.vault import TokenVault

MAX_ITEMS_PER_CALL = 10_000
MAX_REQUEST_BYTES = 12 * 1024 * 1024
"""10,000 values of the longest allowed value (256 characters, up to 4 bytes each) fit."""
HARD_MESSAGE_LIMIT = MAX_REQUEST_BYTES + 1024 * 1024
"""What gRPC core accepts at all (the interceptor audits what lies between the two)."""

_EMPTY = {
    "tokenize": "a Tokenize call without values: send at least one value (as an item or in a column)",
    "detokenize": "a Detokenize call without tokens: send at least one token (with none, make no call)",
    "erase": "an Erase call without tokens: send at least one token (with none, make no call)",
}
"""Calls refused when they carry no item, and why: the limits count items, so an empty call
would be an unmetered audit row."""
_SERVICE_PREFIX = "/" + vault_pb2.DESCRIPTOR.services_by_name["TokenVault"].full_name + "/"
_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


class _Refused(NamedTuple):
    """What the deserializer hands on instead of a request it refused."""

    error: VaultError


def current_caller() -> Caller | None:
    """The verified caller of the call being served (set by `VaultGuard`)."""
    return _CALLER.get()


def _guarded_deserializer(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        if len(data) > MAX_REQUEST_BYTES:
            return _Refused(
                InvalidRequest(f"request of {len(data)} bytes is over {MAX_REQUEST_BYTES}; send fewer values per call")
            )
        try:
            return parse(data)
        except (DecodeError, UnicodeDecodeError, ValueError):
            return _Refused(InvalidRequest("the request is not a valid message (e.g. a string that is not UTF-8)"))

    return deserialize


def _peer_of(context: grpc.ServicerContext, caller: Caller | None) -> str:
    """Whom refusals are throttled by: the certificate, else the peer's address without its port."""
    if caller is not None and caller.cert_sha256:
        return caller.cert_sha256
    peer = context.peer() or "unknown"
    return peer.rsplit(":", 1)[0]


def _item_count(request: Any) -> int:
    if isinstance(request, vault_pb2.TokenizeRequest):
        return len(request.items) + sum(len(c.values) for c in request.columns)
    return len(getattr(request, "tokens", ()))


class VaultGuard(grpc.ServerInterceptor):
    """Size limits, parse errors and strict client identity for every TokenVault call."""

    def __init__(self, vault: TokenVault, verifier: IdentityVerifier) -> None:
        self._vault = vault
        self._verifier = verifier

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Wrap TokenVault's unary methods; leave health and reflection alone."""
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(_SERVICE_PREFIX) or handler.unary_unary is None:
            return handler
        action = method.removeprefix(_SERVICE_PREFIX).lower()
        behavior = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            caller = None
            try:
                pem = context.auth_context().get("x509_pem_cert")
                caller = self._verifier.caller(bytes(pem[0]) if pem else None)
                if isinstance(request, _Refused):
                    raise request.error
                count = _item_count(request)
                if count > MAX_ITEMS_PER_CALL:
                    raise InvalidRequest(f"{count} items in one call; send at most {MAX_ITEMS_PER_CALL} per call")
                if not count and action in _EMPTY:  # no limit counts it, yet it would be audited
                    raise InvalidRequest(_EMPTY[action])
            except (Unauthenticated, InvalidRequest) as error:
                count = 0 if isinstance(request, _Refused) else _item_count(request)
                self._refuse(context, caller, action, error, count)
            token = _CALLER.set(caller)
            try:
                return behavior(request, context)
            finally:
                _CALLER.reset(token)

        parse = handler.request_deserializer
        assert parse is not None  # generated handlers always carry one
        return handler._replace(unary_unary=guarded, request_deserializer=_guarded_deserializer(parse))

    def _refuse(
        self, context: grpc.ServicerContext, caller: Caller | None, action: str, error: VaultError, count: int
    ) -> None:
        try:
            self._vault.refuse(_peer_of(context, caller), caller, action, error, count)
        except RateLimited as throttled:
            context.set_trailing_metadata((("retry-after-ms", str(int(throttled.retry_after * 1000))),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(throttled))
        except VaultError as failure:  # the refusal could not be audited: still refused
            context.abort(status_of(failure), str(failure))
        context.abort(status_of(error), str(error))
