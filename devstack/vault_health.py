"""What `make status` says of the vault service beyond its PID: its readiness and each dependency's health.

The vault stays up when its database check finds the owner's objects in the catalog or the database down: it
answers NOT_SERVING on its health listener (Kubernetes takes the pod out of its Service) and logs why once. A
status that looked at PIDs alone said `up` meanwhile (walk 47, W47-2). Asked on the stack's health socket,
which needs no certificate (root, or the service's own user, reaches it).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2

from vault_service.entrypoints.health_probe import status_of

DEPENDENCIES = ("database", "vault")
"""The vault's dependency checks, each under the health name tokenvault.dependency.<name>."""
_NAMES = {
    health_pb2.HealthCheckResponse.SERVING: "SERVING",
    health_pb2.HealthCheckResponse.NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
}


def vault_health(address: str) -> tuple[bool, str]:
    """(serving and every dependency healthy, what to print) for the vault's health listener at `address`."""
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        ready = status_of(address)
        failing = [name for name in DEPENDENCIES if status_of(address, f"tokenvault.dependency.{name}") != serving]
    except grpc.RpcError as error:
        return False, f"no answer from its health listener ({error.code().name})"
    if ready == serving and not failing:
        return True, "SERVING"
    why = f"{', '.join(failing)} unhealthy" if failing else "not ready yet"
    return False, f"{_NAMES.get(ready, str(ready))} ({why})"
