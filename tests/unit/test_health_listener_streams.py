"""Idle streams on one connection cannot fill the plaintext health listener's call cap.

Review 21, R21-3: the asyncio listener refuses calls beyond HEALTH_CALLS_AT_ONCE (1024); ~1100
silent Check calls re-opened from one local process made probes fail RESOURCE_EXHAUSTED. Each
connection now has at most HEALTH_STREAMS_PER_CONNECTION streams open at once (HTTP/2's own
limit: the client queues the rest), so filling the cap takes hundreds of connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2

from tokenvault_common.health import ListingHealthServicer
from vault_service.entrypoints.health_listener import HEALTH_CALLS_AT_ONCE, create_health_server

CHECK = "/grpc.health.v1.Health/Check"
SILENT_ON_ONE_CONNECTION = HEALTH_CALLS_AT_ONCE + 76
_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
"""gRPC shares a connection between channels to one target: the kubelet, another process, has its own."""
READ_SECONDS = 10.0  # longer than the test: the silent calls stay open while the probes are made


async def _flood_then_probe(port: int) -> list[int]:
    """The probes' answers while SILENT_ON_ONE_CONNECTION calls that never send stay open on one connection."""
    never = asyncio.Event()

    async def never_sends() -> AsyncIterator[bytes]:
        await never.wait()
        yield b""

    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as attacker,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[_OWN_CONNECTION]) as kubelet,
    ):
        silent = attacker.stream_stream(CHECK, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        calls = [silent(never_sends()) for _ in range(SILENT_ON_ONE_CONNECTION)]
        opened = [asyncio.ensure_future(call.wait_for_connection()) for call in calls]
        await asyncio.wait(opened, timeout=1)  # all, before the fix; 4 with it
        check = kubelet.unary_unary(
            CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        answers = []
        for _ in range(3):
            try:
                answer = await check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                answers.append(answer.status)
            except grpc.aio.AioRpcError as refused:
                answers.append(-refused.code().value[0])
        for call in calls:
            call.cancel()
        for waiting in opened:
            waiting.cancel()
        return answers


def test_idle_streams_on_one_connection_leave_probes_answered() -> None:
    statuses = ListingHealthServicer()
    statuses.set("", health_pb2.HealthCheckResponse.SERVING)
    listener, port = create_health_server(statuses, "127.0.0.1:0", READ_SECONDS)
    listener.start()
    try:
        answers = asyncio.run(_flood_then_probe(port))
    finally:
        listener.stop(0).wait()
    assert answers == [health_pb2.HealthCheckResponse.SERVING] * 3, f"probes answered {answers}"
