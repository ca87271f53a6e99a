"""Building and running the gRPC server: mTLS, health checking, reflection, graceful stop."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from vault_service.entrypoints.servicer import TokenVaultServicer
from vault_service.service.vault import TokenVault

SERVICE_NAME = vault_pb2.DESCRIPTOR.services_by_name["TokenVault"].full_name


def server_credentials(cert: Path, key: Path, client_ca: Path) -> grpc.ServerCredentials:
    """TLS that requires a client certificate issued by `client_ca`."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes(),
        require_client_auth=True,
    )


def create_server(
    vault: TokenVault, address: str, credentials: grpc.ServerCredentials, workers: int = 16
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A server for `vault` bound to `address` (port 0 picks one); returns (server, port, health)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    vault_pb2_grpc.add_TokenVaultServicer_to_server(TokenVaultServicer(vault), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer
