"""One JSON logging setup for both services.

Log lines are JSON objects with `time`, `level`, `logger`, `service` and `message`, plus any
`extra=` fields. Callers pass identifiers (message ids, counts, client names), never PII values.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON log lines for `service` to stderr at `level`, replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
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
