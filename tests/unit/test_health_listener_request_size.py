"""The plaintext health listener takes requests of a health probe's size only.

A caller without a certificate (on TCP: TOKENVAULT_HEALTH_TCP=allow) could have gRPC read 4 MiB
per call, its default, for each of HEALTH_CALLS_AT_ONCE calls (1024) at once. A Check names a service
in a few dozen bytes; gRPC core now refuses anything over HEALTH_REQUEST_BYTES from its header.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tokenvault_common.health import ListingHealthServicer
from vault_service.entrypoints.grpc_bounds import RECEIVE_WINDOW_OPTIONS
from vault_service.entrypoints.health_listener import HEALTH_REQUEST_BYTES, create_health_server


def test_a_check_over_the_request_bound_is_refused_and_a_probe_is_answered() -> None:
    statuses = ListingHealthServicer()
    statuses.set("", health_pb2.HealthCheckResponse.SERVING)
    listener, port = create_health_server(statuses, "127.0.0.1:0", 2.0)
    listener.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as refused:
                check(health_pb2.HealthCheckRequest(service="x" * (1024 * 1024)), timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert HEALTH_REQUEST_BYTES < 1024 * 1024
            probe = check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert probe.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        listener.stop(0).wait()


def test_the_listener_keeps_the_vault_ports_stream_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call the listener has not read holds 64 KiB, not the 4 MiB+ bandwidth-delay probing grants (review 29, F6)."""
    options_seen: list[list[tuple[str, object]]] = []
    real_server = grpc.aio.server

    def recording_server(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        options_seen.append(list(kwargs.get("options", ())))
        return real_server(*args, **kwargs)

    monkeypatch.setattr(grpc.aio, "server", recording_server)
    listener, _ = create_health_server(ListingHealthServicer(), "127.0.0.1:0", 2.0)
    try:
        assert len(options_seen) == 1
        for option in RECEIVE_WINDOW_OPTIONS:
            assert option in options_seen[0]
        assert ("grpc.http2.bdp_probe", 0) in RECEIVE_WINDOW_OPTIONS
    finally:
        listener.stop(0).wait()
