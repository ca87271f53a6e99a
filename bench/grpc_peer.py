"""The peer under the vault's single-call figures: a bare gRPC Python server, same mTLS, same callers.

`make bench-vault` starts one beside the vault (`python -m bench.grpc_peer <certs> <address>`):
grpcio's stock health servicer on the synchronous server, with the vault's server certificate
and client CA, and nothing of the vault's (no interceptor, no database, no audit). Its health
check, called from the same four clients as the vault's, is what gRPC's Python server and
client cost on this machine by themselves; the vault's single-token latency can only be read
against it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devstack.procs import free_port, spawn, stop_pid, wait_until
from devstack.services import REPO, vault_healthy


def serve(certs: Path, address: str) -> None:
    """Serve the stock health service on `address` with mTLS until killed."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [((certs / "tokenvault-vault-key.pem").read_bytes(), (certs / "tokenvault-vault.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    if server.add_secure_port(address, credentials) == 0:
        raise SystemExit(f"cannot listen on {address}")
    server.start()
    server.wait_for_termination()


@contextmanager
def bare_grpc_server(certs: Path, log_file: Path) -> Iterator[tuple[str, int]]:
    """A peer server process on a free port: (address, PID); stopped on exit."""
    address = f"127.0.0.1:{free_port()}"
    pid = spawn([sys.executable, "-m", "bench.grpc_peer", str(certs), address], log_file, cwd=REPO)
    try:
        probe = (certs / "ca.pem", certs / "fraud-investigator.pem", certs / "fraud-investigator-key.pem")
        wait_until(lambda: vault_healthy(address, *probe), "bare gRPC peer", 30, pid, log_file)
        yield address, pid
    finally:
        stop_pid(pid)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])
