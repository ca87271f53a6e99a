"""grpc.health.v1 `List` on the real vault server: advertised by reflection, so it must answer."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import RunningVault
from vault_service.entrypoints.health_listener import create_health_server
from vault_service.entrypoints.server import LIVENESS_SERVICE


def test_health_list_answers_every_service_and_its_status(vault: RunningVault) -> None:
    server, port = create_health_server(vault.server.health, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            listing = health_pb2_grpc.HealthStub(channel).List  # type: ignore[attr-defined]  # stubs omit it
            response = listing(health_pb2.HealthListRequest(), timeout=5)  # type: ignore[attr-defined]
    finally:
        server.stop(0).wait()
    statuses = {name: status.status for name, status in response.statuses.items()}
    assert statuses[""] == statuses[LIVENESS_SERVICE] == health_pb2.HealthCheckResponse.SERVING
    assert any(name.startswith("tokenvault.dependency.") for name in statuses)
