"""grpc.health.v1 with `List` answered: the stock servicer advertises it but answers UNIMPLEMENTED.

grpcio-health-checking's HealthServicer implements Check and Watch; `List` (in the proto since
2024, so reflection and the generated stubs offer it) falls through to the generated base and
fails. This subclass tracks every status it is given and lists them.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2


class ListingHealthServicer(health.HealthServicer):
    """The stock servicer plus `List`: a snapshot of every service's status."""

    def __init__(self) -> None:
        super().__init__()
        self._listed: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._listed_lock = threading.Lock()

    def set(self, service: str, status: int) -> None:
        """Set a service's status (as the stock servicer does) and remember it for List."""
        super().set(service, status)
        with self._listed_lock:
            self._listed[service] = status

    def status_of(self, service: str) -> int | None:
        """The status set for `service` (None when it was never set), as Check answers it."""
        with self._listed_lock:
            return self._listed.get(service)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Every known service and its status (the type stubs predate HealthListResponse)."""
        with self._listed_lock:
            statuses = {name: health_pb2.HealthCheckResponse(status=status) for name, status in self._listed.items()}
        return health_pb2.HealthListResponse(statuses=statuses)  # type: ignore[attr-defined]
