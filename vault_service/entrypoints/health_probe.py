"""`python -m vault_service.entrypoints.health_probe [--service NAME]`: exit 0 when the vault answers SERVING.

The probe the shipped deployments exec in the vault's container (Kubernetes' exec probes, compose's
health check through devstack.healthcheck): it asks the health listener at TOKENVAULT_HEALTH_ADDRESS
(or --address), a Unix socket only the service's uid can reach, so it needs no certificate and no
port is open to the network for it (attack 21, F4). Readiness asks the service "" (SERVING while the
database is up); liveness `tokenvault.liveness` (SERVING while the process serves). A TCP address's
wildcard host (0.0.0.0, [::]) is asked on loopback. One probe costs ~0.2-0.25 s of CPU (Python and
gRPC's import; review 22, R22-12).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROBE_SECONDS = 2.0
"""How long the probe waits for the answer (Kubernetes' timeoutSeconds for it is 3)."""
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}  # noqa: S104  # dialled on loopback


def dial_target(address: str) -> str:
    """Where to dial the listener bound to `address`: a Unix socket as is, a wildcard host on loopback."""
    if address.startswith("unix:"):
        return address
    host, _, port = address.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def status_of(address: str, service: str = "", timeout: float = PROBE_SECONDS) -> int:
    """The health status the listener at `address` answers for `service` (grpc.RpcError if it does not answer)."""
    with grpc.insecure_channel(dial_target(address)) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # stubs omit it
        return int(check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status)


def serving(address: str, service: str = "", timeout: float = PROBE_SECONDS) -> bool:
    """Whether the listener at `address` answers SERVING for `service`."""
    return status_of(address, service, timeout) == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    """Probe once: 0 when SERVING, 1 otherwise (the reason on stderr), 2 without an address."""
    parser = argparse.ArgumentParser(prog="python -m vault_service.entrypoints.health_probe")
    parser.add_argument("--service", default="", help='health service name ("" readiness, tokenvault.liveness)')
    parser.add_argument("--address", default=os.environ.get("TOKENVAULT_HEALTH_ADDRESS"), help="unix:/path")
    args = parser.parse_args(argv)
    if not args.address:
        print("health_probe: no --address and no TOKENVAULT_HEALTH_ADDRESS", file=sys.stderr)
        return 2
    try:
        status = status_of(args.address, args.service)
    except grpc.RpcError as error:
        print(f"unhealthy: {error.code().name}", file=sys.stderr)
        return 1
    if status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
