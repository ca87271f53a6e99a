"""The plaintext health listener (TOKENVAULT_HEALTH_ADDRESS): probes that hold no certificate.

The shipped deployments serve it on a Unix socket only the service's uid can reach
(`unix:/path`, health_socket.py), probed by `python -m vault_service.entrypoints.health_probe`
run in the container: on a TCP port any network neighbour could flood it (attack 21, F4). On
TCP (an explicit choice: TOKENVAULT_HEALTH_TCP=allow) anyone who reaches the port - a process on
the node, a container in the pod - needs no certificate, so no call there may hold anything for
long. On gRPC's thread-pool server two Check calls that never sent their request froze its two
workers, and readiness and liveness probes timed out while they stayed open (attack 20, finding 1).
So the listener is an asyncio gRPC server on a thread of its own: a call waiting for its request is a coroutine,
not a worker, so silent calls do not keep a probe waiting; each must still deliver its request
within the read bound (TOKENVAULT_REQUEST_READ_SECONDS) or is ended (CANCELLED) and counted in
tokenvault_calls_without_request_total{client="health-listener"}. It serves only what probes
ask - Check, and List for operators - not Watch (a stream open for as long as its client likes).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from tokenvault_common.health import ListingHealthServicer
from vault_service.entrypoints.grpc_bounds import CALLS_WITHOUT_REQUEST, HANDSHAKE_SECONDS, RECEIVE_WINDOW_OPTIONS
from vault_service.entrypoints.health_socket import prepare, restrict, unix_socket_path
from vault_service.entrypoints.request_reads import REQUEST_READ_SECONDS

HEALTH_CALLS_AT_ONCE = 1024
"""Calls open at once on the listener (each a coroutine of a few KiB, ended within the read bound);
gRPC refuses more with RESOURCE_EXHAUSTED."""
HEALTH_STREAMS_PER_CONNECTION = 4
"""Calls open at once on one connection (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: a client queues
the rest itself). A probe is one call per connection; without it ~1100 idle streams on a dozen
connections from one process filled HEALTH_CALLS_AT_ONCE and probes were refused (review 21, R21-3):
filling it now takes HEALTH_CALLS_AT_ONCE / 4 connections."""
HEALTH_REQUEST_BYTES = 4096
"""The largest request the listener takes (a Check names a service in a few dozen bytes; List has no
field). gRPC's default, 4 MiB, let a caller without a certificate have 1024 calls read 4 MiB each at
once; gRPC core refuses a larger one (RESOURCE_EXHAUSTED) from its 5-byte header, before its body."""
LISTENER = "health-listener"
"""How the listener's callers (who have no identity) are named in CALLS_WITHOUT_REQUEST."""
_HEALTH = "grpc.health.v1.Health"
T = TypeVar("T")


class HealthListener:
    """A started-or-startable plaintext health server, run by an event loop on a thread of its own.

    `start()` and `stop(grace)` (which returns an event set once it has stopped) as grpc.Server's.
    """

    def __init__(self, statuses: ListingHealthServicer, address: str, request_read_seconds: float) -> None:
        self._statuses = statuses
        self._read_seconds = request_read_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="health-listener", daemon=True)
        self._thread.start()
        try:
            self._server, self.port = self._run(self._bind(address))
        except BaseException:
            self._close()
            raise

    def start(self) -> None:
        """Start answering calls."""
        self._run(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Stop (calls in progress get `grace` seconds); the event is set once stopped and the loop closed."""
        stopped = threading.Event()
        try:
            self._run(self._server.stop(grace))
        finally:
            self._close()
            stopped.set()
        return stopped

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _bind(self, address: str) -> tuple[grpc.aio.Server, int]:
        socket_path = unix_socket_path(address)
        if socket_path is not None:
            prepare(socket_path)  # UnsafeHealthSocket unless only this uid can reach it
        server = grpc.aio.server(
            options=[
                ("grpc.max_concurrent_streams", HEALTH_STREAMS_PER_CONNECTION),
                ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_SECONDS * 1000)),
                ("grpc.max_receive_message_length", HEALTH_REQUEST_BYTES),
                *RECEIVE_WINDOW_OPTIONS,  # a call not yet read holds 64 KiB, not gRPC's 4 MiB or more
            ],
            maximum_concurrent_rpcs=HEALTH_CALLS_AT_ONCE,
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        port = server.add_insecure_port(address)
        if port == 0:
            raise RuntimeError(f"cannot listen on {address}")
        if socket_path is not None:
            restrict(socket_path)
        return server, port

    def _handlers(self) -> grpc.GenericRpcHandler:
        """Check and List, each request-streaming so that the wait for its request is bounded."""
        return grpc.method_handlers_generic_handler(
            _HEALTH,
            {
                "Check": grpc.stream_unary_rpc_method_handler(
                    self._bounded(self._check, "check"),
                    request_deserializer=health_pb2.HealthCheckRequest.FromString,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                ),
                "List": grpc.stream_unary_rpc_method_handler(
                    self._bounded(self._list, "list"),
                    request_deserializer=health_pb2.HealthListRequest.FromString,  # type: ignore[attr-defined]
                    response_serializer=health_pb2.HealthListResponse.SerializeToString,  # type: ignore[attr-defined]
                ),
            },
        )

    def _bounded(
        self, answer: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], action: str
    ) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def read_first(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async with asyncio.timeout(self._read_seconds):
                    request = await anext(requests, None)
            except TimeoutError:
                CALLS_WITHOUT_REQUEST.labels(LISTENER, action).inc()
                await context.abort(
                    grpc.StatusCode.CANCELLED,
                    f"the call sent no request within {self._read_seconds:g} s (TOKENVAULT_REQUEST_READ_SECONDS)",
                )
            if request is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
            return await answer(request, context)

        return read_first

    async def _check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        status = self._statuses.status_of(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def _list(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return self._statuses.List(request, context)  # type: ignore[arg-type]  # List reads no context


def create_health_server(
    statuses: ListingHealthServicer, address: str, request_read_seconds: float = REQUEST_READ_SECONDS
) -> tuple[HealthListener, int]:
    """A plaintext health listener on `address` (host:port, or unix:/path) answering the main server's health.

    Raises UnsafeHealthSocket when a Unix socket's directory or path could let another uid reach it.

    It answers what the main server's health answers (readiness follows the database) and
    nothing else: no token operation is reachable without mTLS.
    """
    listener = HealthListener(statuses, address, request_read_seconds)
    return listener, listener.port
