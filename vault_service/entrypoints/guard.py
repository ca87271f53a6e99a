"""The vault's front door, as one server interceptor: size, well-formedness and identity.

Before any TokenVault method runs, the interceptor
- refuses a request body over MAX_REQUEST_BYTES, or one that does not parse (invalid UTF-8 in
  a string field included), or a call with no items at all (the limits count items, so an
  empty call would otherwise be an unmetered audit row) with INVALID_ARGUMENT;
- takes the caller from the peer certificate, strictly (`IdentityVerifier`): a certificate not
  issued directly by the client CA, or without exactly one well-formed CN, is UNAUTHENTICATED; so
  is one whose name the access policy does not know, before its body is read and without a share
  of its own (attack 20, finding 2);
- refuses a call beyond the caller's share of calls in progress (`CallSlots`, per client
  identity) with RESOURCE_EXHAUSTED and `retry-after-ms`, before reading its body; such
  refusals are counted in a metric and audited as one row per client, method and interval;
- ends a call that does not deliver its request within the read bound (`RequestReads`,
  TOKENVAULT_REQUEST_READ_SECONDS): a silent call holds a worker for seconds, not until its
  connection's maximum age, and is audited with its certificate's serial (attack 20, finding 3);
  at most all workers but two wait for their request at once, room made fairly between clients
  (`RequestReads`; review 21, R21-4);
- audits every other refusal with what is known of the caller, throttled per peer - a verified
  client by its name, however many certificates it holds (attack 40, A40-1); a certificate refused for
  its validity window or revocation by the name it carries, in a bucket apart from that client's own;
  any other refused certificate in one bucket; never by the peer's address, which the caller chooses
  (attack 45, A45-5); all refused certificates together within REFUSED_CERTIFICATES_AUDITED -
  (a peer over its refusal rate gets RESOURCE_EXHAUSTED and its refusals are counted, not written one by one);
  a refused certificate is audited and logged with its serial and SHA-256 (never its subject).
The caller is handed to the servicer through `current_caller()`.

Health and reflection on the same (mTLS) port are checked too, before their request is read
(side_calls.py, attack 19, finding 1; review 20, R20-1): a caller whose certificate the vault
would refuse - revoked, expired, foreign - is refused there as well, each call counts in its
client's share, and streams, which hold a worker while open, are at most SIDE_STREAMS_AT_ONCE
at once for all clients together, each ended after SIDE_STREAM_SECONDS.

gRPC core itself refuses bodies over the server's hard limit (a little above MAX_REQUEST_BYTES)
before they are buffered; those never reach Python and are not audited.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import DecodeError

from tokenvault_api.v1 import audit_reports_pb2, key_jobs_pb2, vault_pb2
from vault_service.domain.audit import MAX_ITEMS_PER_CALL
from vault_service.domain.errors import (
    InvalidRequest,
    RateLimited,
    RequestNotSent,
    TooManyCallsAtOnce,
    Unauthenticated,
    VaultError,
)
from vault_service.domain.identity import Caller, IdentityVerifier
from vault_service.domain.policy import AUDIT_REPORT_ACTIONS
from vault_service.entrypoints.call_slots import CallSlots
from vault_service.entrypoints.grpc_bounds import CALLS_WITHOUT_REQUEST
from vault_service.entrypoints.metrics import CALLS_OVER_CLIENT_SHARE, CALLS_WITHOUT_ROOM_TO_WAIT
from vault_service.entrypoints.request_reads import RequestReads
from vault_service.entrypoints.side_calls import NO_REQUEST, SideCalls
from vault_service.entrypoints.status import nothing_stored_trailer, status_of
from vault_service.service.metering import REFUSED_CERTIFICATES
from vault_service.service.vault import TokenVault

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
_OVER_SHARE = "calls over the client's share of calls at once (TooManyCallsAtOnce)"
"""How refusals for being over the share are audited: counted, one row per client, method and interval."""
_NO_ROOM_TO_WAIT = "calls refused for want of room to wait for their request (TooManyCallsAtOnce)"
"""How refusals for too many calls waiting for their request (`RequestReads`) are audited: counted, as above."""
_SERVICE_PREFIX = "/" + vault_pb2.DESCRIPTOR.services_by_name["TokenVault"].full_name + "/"
_KEY_JOBS_PREFIX = "/" + key_jobs_pb2.DESCRIPTOR.services_by_name["KeyJobs"].full_name + "/"
_AUDIT_REPORTS_PREFIX = "/" + audit_reports_pb2.DESCRIPTOR.services_by_name["AuditReports"].full_name + "/"
_AUDIT_REPORT_ACTIONS = {"Verify": AUDIT_REPORT_ACTIONS["verify"], "WhoSaw": AUDIT_REPORT_ACTIONS["who-saw"]}
"""AuditReports' methods as their calls are audited (their rows and refusals alike)."""
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


def _peer_of(caller: Caller | None) -> str:
    """Whom refusals at the front door are throttled by: a verified client by its name (refused ones: `_refused_peer`).

    By name (its certificate's CN), not by certificate: a client allowed to issue itself certificates (the
    ETL's agent, `pki/issue` for CN etl-service) got a fresh burst of audited refusals with each one (attack
    40, A40-1: 12,001 rows in 33 s from 240 certificates). Apart from the bucket its use cases' refusals
    are throttled in (keyed by the bare name): a flood of malformed calls does not turn the client's
    PermissionDenied or over-the-limit answers into RESOURCE_EXHAUSTED. The audit row still names the
    certificate (serial, SHA-256).
    """
    if caller is not None:
        return f"client {caller.name}"  # a CN has no space: no name can be taken for another key
    return _REFUSED_NO_CLIENT


def _refused_peer(name: str) -> str:
    """Whom refusals of a certificate the vault refused itself (revoked, expired, not yet valid) are throttled by.

    By the client name it carries when the client CA issued it with one well-formed CN (TLS verified the chain,
    `IdentityVerifier` that it is the client CA's own leaf), in a bucket apart from the verified client's
    (`_peer_of`): the holder of a revoked copy of a client's certificate spends nothing of the client's own.
    Never by the peer's address, as until attack 45 (A45-5): any local process binds any 127.0.0.0/8 address
    before it connects (an IPv6 prefix or a NAT pool likewise), and a revoked certificate from 6 addresses
    wrote 300 audited rows in 1.2 s, the ETL's own expired `etl-service` certificate likewise. `name` is "" for
    a certificate without a client name, and the caller gives a name the policy does not know as "": those
    share one bucket (`_REFUSED_NO_CLIENT`), so the keys are the policy's names and one more.
    """
    return f"refused {name}" if name else _REFUSED_NO_CLIENT  # a CN has no space: no key is another's


_REFUSED_NO_CLIENT = "refused certificates of no client the policy knows"
"""Whom refusals of certificates without a client name, or of a name the policy does not know, are throttled by."""


_UNKNOWN_NAMES = "names the policy does not know"
"""Whom refusals of certificates for a name the policy does not know are throttled by: one bucket for them all,
since the names the client CA may issue are not the policy's to bound."""


def _one(reads: RequestReads, requests: Iterator[Any], context: grpc.ServicerContext, client: str) -> Any:
    """The call's one request message, or its refusal (audited by `_check`): none sent in time, or no room to wait."""
    try:
        request = reads.first(requests, context, client)
    except (RequestNotSent, TooManyCallsAtOnce) as error:
        return _Refused(error)
    return _Refused(InvalidRequest(NO_REQUEST)) if request is None else request


def _key_command(method: str) -> str:
    """A KeyJobs method's key command, as the policy's `key_jobs` names it (RotateKey: rotate-key)."""
    name = method.removeprefix(_KEY_JOBS_PREFIX)
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _item_count(request: Any) -> int:
    if isinstance(request, vault_pb2.TokenizeRequest):
        return len(request.items) + sum(len(c.values) for c in request.columns)
    return len(getattr(request, "tokens", ()))


class VaultGuard(grpc.ServerInterceptor):
    """Size limits, parse errors, strict client identity and each client's share of calls for every call."""

    def __init__(
        self, vault: TokenVault, verifier: IdentityVerifier, slots: CallSlots, reads: RequestReads | None = None
    ) -> None:
        self._vault = vault
        self._verifier = verifier
        self._slots = slots
        self._reads = reads or RequestReads()
        self._side_calls = SideCalls(self._admit, slots.release, vault.refusals.counted, self._reads, self._unread)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Wrap TokenVault's unary methods; health and reflection as `SideCalls` guards them.

        Each is served as a client-streaming method (the same bytes on the wire: one message,
        then the end of the stream), so the caller's identity and share of calls are checked
        before its request is read: a call over its client's share is refused without receiving
        or parsing a body of up to 12 MiB, and so does not hold a worker for long.
        """
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            return None
        if method.startswith(_KEY_JOBS_PREFIX) and handler.unary_stream is not None:
            return self._key_job(handler, _key_command(method))
        if method.startswith(_KEY_JOBS_PREFIX) and handler.unary_unary is not None:  # the short key commands
            return self._unary(handler, _key_command(method))
        report = _AUDIT_REPORT_ACTIONS.get(method.removeprefix(_AUDIT_REPORTS_PREFIX), "")
        if method.startswith(_AUDIT_REPORTS_PREFIX) and report and handler.unary_stream is not None:
            return self._key_job(handler, report)  # a stream, admitted as a key job's is
        if method.startswith(_AUDIT_REPORTS_PREFIX) and report and handler.unary_unary is not None:
            return self._unary(handler, report)
        if not method.startswith(_SERVICE_PREFIX) or handler.unary_unary is None:
            return self._side_calls.guarded(handler, method)
        return self._unary(handler, method.removeprefix(_SERVICE_PREFIX).lower())

    def _unary(self, handler: Any, action: str) -> Any:
        """A unary method (TokenVault's, KeyJobs' short commands, AuditReports' Verify), served request-streaming.

        See `intercept_service`.
        """
        behavior = handler.unary_unary

        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            caller = self._admit(context, action)
            token = _CALLER.set(caller)
            try:
                request = _one(self._reads, requests, context, caller.name)
                self._check(context, caller, action, request)
                return behavior(request, context)
            finally:
                _CALLER.reset(token)
                self._slots.release(caller.name)

        parse = handler.request_deserializer
        assert parse is not None  # generated handlers always carry one
        return handler._replace(
            request_streaming=True,
            unary_unary=None,
            stream_unary=guarded,
            request_deserializer=_guarded_deserializer(parse),
        )

    def _key_job(self, handler: Any, action: str) -> Any:
        """A KeyJobs method (or AuditReports' WhoSaw), admitted as TokenVault's are before its request is read.

        Served request-streaming like them; its answer streams for as long as the job runs (one job at a
        time per process, so at most one worker is held by it), not bounded as a side stream is. WhoSaw's
        pages stream once its report is made (one report at a time per process, bounded by its deadline).
        """
        behavior = handler.unary_stream

        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self._admit(context, action)
            token = _CALLER.set(caller)
            try:
                request = _one(self._reads, requests, context, caller.name)
                if isinstance(request, _Refused):
                    self._check(context, caller, action, request)  # audits and aborts
                yield from behavior(request, context)
            finally:
                _CALLER.reset(token)
                self._slots.release(caller.name)

        parse = handler.request_deserializer
        assert parse is not None  # generated handlers always carry one
        return handler._replace(
            request_streaming=True,
            unary_stream=None,
            stream_stream=guarded,
            request_deserializer=_guarded_deserializer(parse),
        )

    def _admit(self, context: grpc.ServicerContext, action: str) -> Caller:
        """The verified caller, holding one of its client's call slots (give it back with `_slots.release`).

        Refused before any request is read: waiting for the body of a caller who is no client
        would let a revoked or foreign certificate hold a worker per silent call, outside every
        client's share (insider round 5), and so would a certificate of the client CA for a name
        the policy does not know, with a share of its own (attack 20, finding 2). Its items are
        unknown (0).
        """
        try:
            pem = context.auth_context().get("x509_pem_cert")
            caller = self._verifier.caller(bytes(pem[0]) if pem else None)
        except Unauthenticated as error:
            peer = _refused_peer(error.name if error.name and self._knows(error.name) else "")
            self._refuse(context, None, action, error, 0, peer, REFUSED_CERTIFICATES)
            raise  # not reached: _refuse aborts
        try:
            self._vault.check_client(caller.name)
        except Unauthenticated as error:
            self._refuse(context, caller, action, error, 0, _UNKNOWN_NAMES)
        try:
            self._slots.take(caller.name)
        except TooManyCallsAtOnce as error:
            CALLS_OVER_CLIENT_SHARE.labels(caller.name, action).inc()
            self._crowded(context, caller, action, error, _OVER_SHARE)
        return caller

    def _knows(self, name: str) -> bool:
        """Whether the access policy knows client `name`."""
        try:
            self._vault.check_client(name)
        except Unauthenticated:
            return False
        return True

    def _crowded(
        self, context: grpc.ServicerContext, caller: Caller, action: str, error: TooManyCallsAtOnce, reason: str
    ) -> None:
        """Refuse a call there is no room for with RESOURCE_EXHAUSTED and retry-after, counted in the audit log."""
        self._vault.refusals.counted(caller.name, action, reason)
        _retry_after(context, error.retry_after, nothing_stored_trailer(context))  # the call did not run
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))

    def _no_room_to_wait(
        self, context: grpc.ServicerContext, caller: Caller, action: str, error: TooManyCallsAtOnce
    ) -> None:
        """Refuse a call there is no room to wait for its request for (`RequestReads`): counted, audited as crowded."""
        CALLS_WITHOUT_ROOM_TO_WAIT.labels(caller.name, action).inc()
        self._crowded(context, caller, action, error, _NO_ROOM_TO_WAIT)

    def _check(self, context: grpc.ServicerContext, caller: Caller, action: str, request: Any) -> None:
        """Refuse (audited) a request that did not parse, carries too many items, or none."""
        try:
            if isinstance(request, _Refused):
                if isinstance(request.error, TooManyCallsAtOnce):
                    self._no_room_to_wait(context, caller, action, request.error)
                if isinstance(request.error, RequestNotSent):
                    CALLS_WITHOUT_REQUEST.labels(caller.name, action).inc()
                raise request.error
            count = _item_count(request)
            if count > MAX_ITEMS_PER_CALL:
                raise InvalidRequest(f"{count} items in one call; send at most {MAX_ITEMS_PER_CALL} per call")
            if not count and action in _EMPTY:  # no limit counts it, yet it would be audited
                raise InvalidRequest(_EMPTY[action])
        except InvalidRequest as error:
            self._refuse(context, caller, action, error, 0 if isinstance(request, _Refused) else _item_count(request))

    def _unread(
        self, context: grpc.ServicerContext, caller: Caller, action: str, error: RequestNotSent | TooManyCallsAtOnce
    ) -> None:
        """Count and audit a side call ended for not sending its request in time (throttled per peer).

        One refused for want of room to wait for it is counted as one over its client's share is.
        """
        if isinstance(error, TooManyCallsAtOnce):
            self._no_room_to_wait(context, caller, action, error)
        CALLS_WITHOUT_REQUEST.labels(caller.name, action).inc()
        self._refuse(context, caller, action, error, 0)

    def _refuse(
        self,
        context: grpc.ServicerContext,
        caller: Caller | None,
        action: str,
        error: VaultError,
        count: int,
        peer: str = "",
        within: str = "",
    ) -> None:
        """Audit the refusal (throttled per `peer`, by default `_peer_of(caller)`, and in bucket `within`); abort."""
        try:
            self._vault.refuse(peer or _peer_of(caller), caller, action, error, count, within)
        except RateLimited as throttled:
            _retry_after(context, throttled.retry_after)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(throttled))
        except VaultError as failure:  # the refusal could not be audited: still refused
            context.abort(status_of(failure), str(failure))
        context.abort(status_of(error), str(error))


def _retry_after(context: grpc.ServicerContext, seconds: float, more: Sequence[tuple[str, str]] = ()) -> None:
    context.set_trailing_metadata((("retry-after-ms", str(int(seconds * 1000))), *more))
