"""The plaintext health listener (TOKENVAULT_HEALTH_ADDRESS): Kubernetes' gRPC probes, no certificate.

Anyone who reaches the port - a process on the node, a container in the pod - needs no
certificate, so nothing there may hold a worker for long. Two Check calls that never sent their
request froze its two workers, and readiness and liveness probes timed out while they stayed
open (attack 20, finding 3). Now it serves only what probes ask - Check, and List for operators -
not Watch (a stream holds a worker for as long as it is open); each call must deliver its request
within the read bound (`RequestReads`) or is ended and counted; it has workers of its own, more
than a probe round needs, and a bound on calls at once beyond which gRPC refuses at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from vault_service.domain.errors import RequestNotSent
from vault_service.entrypoints.metrics import CALLS_WITHOUT_REQUEST
from vault_service.entrypoints.request_reads import REQUEST_READ_SECONDS, RequestReads

HEALTH_WORKERS = 4
"""Worker threads of the health listener (a probe's Check takes microseconds)."""
HEALTH_CALLS_AT_ONCE = 16
"""Calls served or queued at once on the health listener; more are refused by gRPC (RESOURCE_EXHAUSTED)."""
PROBED_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/List"})
"""What the listener serves: every other method, Watch included, is UNIMPLEMENTED there."""
LISTENER = "health-listener"
"""How the listener's callers (who have no identity) are named in CALLS_WITHOUT_REQUEST."""


class _BoundedReads(grpc.ServerInterceptor):
    """Serves only PROBED_METHODS, each request-streaming with its request read within the bound."""

    def __init__(self, reads: RequestReads) -> None:
        self._reads = reads

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Check and List with a bounded read of their request; None (UNIMPLEMENTED) for the rest."""
        method: str = handler_call_details.method
        handler = continuation(handler_call_details) if method in PROBED_METHODS else None
        if handler is None or handler.unary_unary is None:
            return None
        action = method.rsplit("/", 1)[-1].lower()
        return handler._replace(
            request_streaming=True, unary_unary=None, stream_unary=self._bounded(handler.unary_unary, action)
        )

    def _bounded(self, behavior: Callable[[Any, grpc.ServicerContext], Any], action: str) -> Callable[..., Any]:
        def read_first(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            try:
                request = self._reads.first(requests, context)
            except RequestNotSent as error:
                CALLS_WITHOUT_REQUEST.labels(LISTENER, action).inc()
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            if request is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
            return behavior(request, context)

        return read_first


def create_health_server(
    health_servicer: health.HealthServicer, address: str, request_read_seconds: float = REQUEST_READ_SECONDS
) -> tuple[grpc.Server, int]:
    """A plaintext server on `address` with only the health service of the main server (Check and List).

    It answers what the main server's health answers (readiness follows the database) and
    nothing else: no token operation is reachable without mTLS.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=HEALTH_WORKERS, thread_name_prefix="health"),
        interceptors=[_BoundedReads(RequestReads(request_read_seconds))],
        maximum_concurrent_rpcs=HEALTH_CALLS_AT_ONCE,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return server, port
