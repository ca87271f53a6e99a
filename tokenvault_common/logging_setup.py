"""One JSON logging setup for both services.

Log lines are JSON objects with `time` (ISO-8601, UTC), `level`, `logger`, `service` and
`message`, plus any `extra=` fields. Callers pass identifiers (message ids, counts, client
names), never PII values. With `native=True`, what native code (gRPC's core) writes straight to
file descriptor 2 becomes JSON records too (tokenvault_common/native_logs.py).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from tokenvault_common.native_logs import route_native_stderr


class _UtcJsonFormatter(JsonFormatter):
    """JSON with ISO-8601 UTC timestamps (`2026-12-02T11:32:30.871+00:00`)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        return True


def configure_logging(service: str, level: str = "INFO", native: bool = False) -> None:
    """Send JSON log lines for `service` to stderr at `level`, replacing earlier handlers.

    `native`: also turn what native code writes to fd 2 (gRPC's core) into JSON records.
    """
    if native:
        route_native_stderr()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _UtcJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(service)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ServiceFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO (botocore credential lookups, hvac) is noise in service logs.
    for noisy in ("botocore", "boto3", "urllib3", "hvac"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
