"""Health and reflection on the vault's mTLS port, held to the same door as TokenVault's methods.

The guard once let every method outside TokenVault through untouched (attack 19, finding 1): a
reflection stream is served on a worker thread for as long as it stays open, so 16 streams that
never sent a request - from any certificate of the client CA, a revoked one included - held
every worker, and every Tokenize and reveal waited, with no audit row, no log line and the
Kubernetes probes (on the plaintext health listener) still saying SERVING.

Now each such call is admitted as a TokenVault call is (`admit`: the certificate verified -
issued by the client CA, within its validity, not revoked - else UNAUTHENTICATED and audited;
one of the client's call slots taken, else RESOURCE_EXHAUSTED) and its slot given back when it
ends. Calls that hold a worker while they stream (reflection) are also bounded for all clients
together, SIDE_STREAMS_AT_ONCE: a tool's `grpcurl describe` needs one for a moment, and no set
of certificates can take more than that many workers through them. Health's Watch is served
without a worker (grpcio's non-blocking form): it is admitted and keeps no slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vault_service.domain.identity import Caller

SIDE_STREAMS_AT_ONCE = 2
"""Reflection streams open at once on one vault process, all clients together (each holds a worker)."""

Admit = Callable[[grpc.ServicerContext, str], Caller]


def _action_of(method: str) -> str:
    """The audit's name for a side method: its service's last name, e.g. `health`, `serverreflection`."""
    service = method.strip("/").split("/", 1)[0]
    return service.rsplit(".", 1)[-1].lower()


class SideCalls:
    """Wraps the handlers of health and reflection: admitted, counted in the client's share, streams bounded."""

    def __init__(self, admit: Admit, release: Callable[[str], None]) -> None:
        """`admit` verifies the caller and takes a slot (aborting the call otherwise); `release` gives it back."""
        self._admit = admit
        self._release = release
        self._streams = threading.BoundedSemaphore(SIDE_STREAMS_AT_ONCE)

    def guarded(self, handler: Any, method: str) -> Any:
        """`handler` with each of its calls admitted first (whatever its arity)."""
        action = _action_of(method)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._single(handler.unary_unary, action))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._single(handler.stream_unary, action))
        if handler.unary_stream is not None:
            behavior = handler.unary_stream
            if getattr(behavior, "experimental_non_blocking", False):
                return handler._replace(unary_stream=self._non_blocking(behavior, action))
            return handler._replace(unary_stream=self._streaming(behavior, action))
        return handler._replace(stream_stream=self._streaming(handler.stream_stream, action))

    def _single(self, behavior: Callable[..., Any], action: str) -> Callable[..., Any]:
        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            caller = self._admit(context, action)
            try:
                return behavior(request, context)
            finally:
                self._release(caller.name)

        return admitted

    def _streaming(self, behavior: Callable[..., Any], action: str) -> Callable[..., Any]:
        def admitted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self._admit(context, action)  # gRPC asks for the first response at once, on the call's worker
            try:
                if not self._streams.acquire(blocking=False):
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{SIDE_STREAMS_AT_ONCE} {action} streams are open on this vault process, the most it"
                        " serves at once for all clients: close yours when done and retry",
                    )
                try:
                    yield from behavior(request, context)
                finally:
                    self._streams.release()
            finally:
                self._release(caller.name)

        return admitted

    def _non_blocking(self, behavior: Callable[..., Any], action: str) -> Callable[..., Any]:
        def admitted(request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
            caller = self._admit(context, action)
            self._release(caller.name)  # served by callbacks, not on a worker: it keeps no slot
            return behavior(request, context, send_response_callback)

        admitted.experimental_non_blocking = True  # type: ignore[attr-defined]
        admitted.experimental_thread_pool = getattr(behavior, "experimental_thread_pool", None)  # type: ignore[attr-defined]
        return admitted
