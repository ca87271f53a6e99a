"""Prometheus metrics of the vault: calls and items by method and code, latency, cache, health.

Labels carry method names, status codes and dependency names only, never values or tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from vault_service.service.token_cache import TokenCache

REQUESTS = Counter("tokenvault_grpc_requests_total", "gRPC calls by method and status code", ["method", "code"])
ITEMS = Counter("tokenvault_grpc_items_total", "Items in gRPC calls by method and per-item code", ["method", "code"])
LATENCY = Histogram(
    "tokenvault_grpc_request_seconds",
    "gRPC call latency by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEPENDENCY_UP = Gauge("tokenvault_dependency_up", "1 when the dependency answered the last check", ["dependency"])
ROTATION_ROWS = Counter("tokenvault_rotation_rows_total", "Rows processed by key rotation jobs", ["phase"])
ROTATION_ROWS_LEFT = Gauge("tokenvault_rotation_rows_left", "Rows a key rotation job still has to process", ["phase"])


def count_items(method: str, codes: Iterable[str]) -> None:
    """Count the per-item outcomes of one call."""
    tally: dict[str, int] = {}
    for code in codes:
        tally[code] = tally.get(code, 0) + 1
    for code, count in tally.items():
        ITEMS.labels(method, code).inc(count)


class _CacheCollector(Collector):
    def __init__(self, cache: TokenCache) -> None:
        self._cache = cache

    def collect(self) -> Iterable[Metric]:
        hits = CounterMetricFamily("tokenvault_token_cache_lookups", "Token cache lookups", labels=["result"])
        hits.add_metric(["hit"], self._cache.hits)
        hits.add_metric(["miss"], self._cache.misses)
        size = GaugeMetricFamily("tokenvault_token_cache_entries", "Tokens held in the cache")
        size.add_metric([], len(self._cache))
        return [hits, size]


def register_cache(cache: TokenCache) -> None:
    """Expose the cache's hit and miss counts (once per process)."""
    REGISTRY.register(_CacheCollector(cache))


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every unary call by method and final status code and times it.

    The wrapped handler of each method is built once and reused, with its metric children
    bound, so a call pays for two metric updates and nothing else.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[object, grpc.RpcMethodHandler[Any, Any]]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap unary-unary handlers; leave the others (health watch, reflection) as they are."""
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        cached = self._wrapped.get(handler_call_details.method)
        if cached is None or cached[0] is not handler.unary_unary:
            cached = (handler.unary_unary, _measured_handler(handler, handler_call_details.method))
            self._wrapped[handler_call_details.method] = cached
        return cached[1]


def _measured_handler(handler: grpc.RpcMethodHandler[Any, Any], path: str) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its calls counted by final code and timed."""
    method = path.rsplit("/", 1)[-1]
    behavior = handler.unary_unary
    assert behavior is not None  # only unary-unary handlers are wrapped
    latency = LATENCY.labels(method)
    requests_by_code: dict[str, Any] = {}

    def measured(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            response = behavior(request, context)
            code = _code_name(context, default="OK")
            return response
        except Exception:
            code = _code_name(context, default="UNKNOWN")
            raise
        finally:
            counter = requests_by_code.get(code)
            if counter is None:
                counter = requests_by_code.setdefault(code, REQUESTS.labels(method, code))
            counter.inc()
            latency.observe(time.perf_counter() - started)

    return grpc.unary_unary_rpc_method_handler(
        measured,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _code_name(context: grpc.ServicerContext, default: str) -> str:
    code = context.code()  # type: ignore[attr-defined]
    return code.name if isinstance(code, grpc.StatusCode) else default
