"""Health and reflection on the vault's mTLS port, held to the same door as TokenVault's methods.

The guard once let every method outside TokenVault through untouched (attack 19, finding 1): a
reflection stream is served on a worker thread for as long as it stays open, so 16 streams that
never sent a request - from any certificate of the client CA, a revoked one included - held
every worker, and every Tokenize and reveal waited, with no audit row, no log line and the
Kubernetes probes (on the plaintext health listener) still saying SERVING.

Now each such call is admitted as a TokenVault call is, before any request is read (`admit`:
the certificate verified - issued by the client CA, within its validity, not revoked - else
UNAUTHENTICATED and audited; one of the client's call slots taken, else RESOURCE_EXHAUSTED),
and its slot given back when it ends. Methods whose request is one message (health's Check,
List and Watch) are served as request-streaming for that, as the guard serves TokenVault's: gRPC
would otherwise hold a worker waiting for the message before any check ran (review 20, R20-1).
Calls that stream their answers (reflection, health's Watch) hold a worker while open: they are
at most SIDE_STREAMS_AT_ONCE at once for all clients together, each ended by the server after
SIDE_STREAM_SECONDS (a describe takes milliseconds; a Watch client reconnects), so no set of
certificates keeps workers for long (review 20, R20-3). That alone let one certificate re-open
two streams as they ended and keep both slots: every other client's reflection (buf curl,
grpcurl) was refused 24 times in 24, and only the refused were audited (attack 22, F5). So each
client identity may have at most SIDE_STREAMS_PER_CLIENT (1) open at once: one client leaves the
other slot to the rest. Refusals are counted in the audit log, one row per client, method, reason
and interval; a client refused because other clients hold the slots is told so (how many hold
them, not who), and its row names the holders. Every side call, streams included,
must deliver its first request within the read bound (`RequestReads`), else it is ended and
audited with its certificate's serial: a silent Check of a valid certificate no longer holds a
worker until its connection's maximum age (attack 20, finding 3).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vault_service.domain.errors import RequestNotSent, TooManyCallsAtOnce
from vault_service.domain.identity import Caller
from vault_service.entrypoints.request_reads import RequestReads

SIDE_STREAMS_AT_ONCE = 2
"""Reflection and Watch streams open at once on one vault process, all clients together (each holds a worker)."""
SIDE_STREAMS_PER_CLIENT = 1
"""Such streams one client identity may have open at once on one vault process (attack 22, F5)."""
SIDE_STREAM_SECONDS = 10.0
"""How long the server keeps one such stream open before ending it (cancelled: the client reconnects)."""
STREAMS_AT_ONCE_REASON = "side streams at once (SIDE_STREAMS_AT_ONCE)"
"""How a stream refused for the bound above is counted in the audit log (followed by the holders' names)."""
STREAMS_PER_CLIENT_REASON = "side streams of one client at once (SIDE_STREAMS_PER_CLIENT)"
"""How a stream refused for the client's own bound is counted in the audit log."""
NO_REQUEST = "the call carried no request message"
"""Why a call that ended its stream without a request message is refused (INVALID_ARGUMENT)."""

Admit = Callable[[grpc.ServicerContext, str], Caller]
Unread = Callable[[grpc.ServicerContext, Caller, str, RequestNotSent | TooManyCallsAtOnce], None]
"""(context, caller, action, error) -> aborts: counts and audits a call ended for not sending its request in time,
or refused for want of room to wait for it."""


class StreamRefused(Exception):
    """No slot for a client's stream: `reason` is how the audit log counts it, the message what the client is told."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StreamSlots:
    """Side streams open per client: at most SIDE_STREAMS_PER_CLIENT each, SIDE_STREAMS_AT_ONCE in all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    def take(self, client: str) -> None:
        """One slot for `client`'s stream (give it back with `release`); StreamRefused when there is none."""
        with self._lock:
            if self._open[client] >= SIDE_STREAMS_PER_CLIENT:
                raise StreamRefused(
                    f"client {client!r} already has {self._open[client]} side stream (reflection, health Watch) open on"
                    f" this vault process, the most one client may (SIDE_STREAMS_PER_CLIENT): end it first, or retry"
                    f" once it ends (the server ends each after {SIDE_STREAM_SECONDS:g} s)",
                    STREAMS_PER_CLIENT_REASON,
                )
            if sum(self._open.values()) >= SIDE_STREAMS_AT_ONCE:
                holders = sorted(self._open)
                raise StreamRefused(
                    f"{SIDE_STREAMS_AT_ONCE} side streams (reflection, health Watch) are open on this vault process,"
                    f" the most it serves at once, held by {len(holders)} other client(s) (at most"
                    f" {SIDE_STREAMS_PER_CLIENT} each; each ended after {SIDE_STREAM_SECONDS:g} s): retry later",
                    f"{STREAMS_AT_ONCE_REASON}, held by {', '.join(holders)}",
                )
            self._open[client] += 1

    def release(self, client: str) -> None:
        """Give back a slot `take` gave `client`."""
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]


def _action_of(method: str) -> str:
    """The audit's name for a side method: its service's last name, e.g. `health`, `serverreflection`."""
    service = method.strip("/").split("/", 1)[0]
    return service.rsplit(".", 1)[-1].lower()


class SideCalls:
    """Wraps the handlers of health and reflection: admitted before reading, counted in the client's share, bounded."""

    def __init__(
        self,
        admit: Admit,
        release: Callable[[str], None],
        counted: Callable[[str, str, str], None],
        reads: RequestReads,
        unread: Unread,
    ) -> None:
        """Admitting through `admit` (verifies the caller, takes a slot, aborts otherwise).

        `release` gives the slot back; `counted(client, action, reason)` counts a refusal for the audit log;
        `reads` bounds the wait for a call's first request, and `unread` refuses a call that sent none in time.
        """
        self._admit = admit
        self._release = release
        self._counted = counted
        self._reads = reads
        self._unread = unread
        self._streams = StreamSlots()

    def guarded(self, handler: Any, method: str) -> Any:
        """`handler`, request-streaming, with each of its calls admitted before its request is read."""
        action = _action_of(method)
        if handler.unary_unary is not None:
            single = self._single(handler.unary_unary, action, one_request=True)
            return handler._replace(request_streaming=True, unary_unary=None, stream_unary=single)
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._single(handler.stream_unary, action, one_request=False))
        if handler.unary_stream is not None:  # health's Watch: its blocking form, as it now holds the worker anyway
            streaming = self._streaming(handler.unary_stream, action, one_request=True)
            return handler._replace(request_streaming=True, unary_stream=None, stream_stream=streaming)
        return handler._replace(stream_stream=self._streaming(handler.stream_stream, action, one_request=False))

    def _single(self, behavior: Callable[..., Any], action: str, one_request: bool) -> Callable[..., Any]:
        def admitted(requests: Any, context: grpc.ServicerContext) -> Any:
            caller = self._admit(context, action)
            try:
                return behavior(self._requests(requests, context, caller.name, one_request), context)
            except (RequestNotSent, TooManyCallsAtOnce) as error:
                self._unread(context, caller, action, error)
                raise  # not reached: unread aborts
            finally:
                self._release(caller.name)

        return admitted

    def _streaming(self, behavior: Callable[..., Any], action: str, one_request: bool) -> Callable[..., Any]:
        def admitted(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self._admit(context, action)  # gRPC asks for the first response at once, on the call's worker
            try:
                try:
                    self._streams.take(caller.name)
                except StreamRefused as refused:
                    self._counted(caller.name, action, refused.reason)
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refused))
                ended = threading.Timer(SIDE_STREAM_SECONDS, context.cancel)
                ended.daemon = True
                ended.start()
                try:
                    yield from behavior(self._requests(requests, context, caller.name, one_request), context)
                except (RequestNotSent, TooManyCallsAtOnce) as error:
                    self._unread(context, caller, action, error)
                finally:
                    ended.cancel()
                    self._streams.release(caller.name)
            finally:
                self._release(caller.name)

        return admitted

    def _requests(self, requests: Iterator[Any], context: grpc.ServicerContext, client: str, one_request: bool) -> Any:
        """What the behavior takes: the one request (INVALID_ARGUMENT when none came), or the stream.

        Either way the first request must arrive within the read bound (RequestNotSent otherwise).
        """
        if not one_request:
            return self._reads.bounded(requests, context, client)
        request = self._reads.first(requests, context, client)
        if request is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, NO_REQUEST)
        return request
