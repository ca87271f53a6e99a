"""Prometheus metrics of the ETL (exposed when ETL_METRICS_PORT is set)."""

from __future__ import annotations

import dataclasses

from prometheus_client import Counter

from etl_service.service.consumer import RunSummary

RECEIVED = Counter("etl_messages_received_total", "Messages received from the source queue")
LOADED = Counter("etl_rows_loaded_total", "Rows inserted into user_logins")
DUPLICATES = Counter("etl_rows_duplicate_total", "Rows skipped because their event was already loaded")
QUARANTINED = Counter("etl_messages_quarantined_total", "Messages sent to the DLQ", ["reason"])
RETRIED = Counter("etl_messages_retried_total", "Messages left for redelivery after a dependency failure")
DELETE_FAILURES = Counter("etl_delete_failures_total", "Messages whose deletion SQS refused")


class MetricsRecorder:
    """Turns the running totals into counter increments."""

    def __init__(self) -> None:
        self._last = RunSummary()

    def __call__(self, summary: RunSummary) -> None:
        """Record what changed since the previous call."""
        last = self._last
        RECEIVED.inc(summary.received - last.received)
        LOADED.inc(summary.loaded - last.loaded)
        DUPLICATES.inc(summary.already_loaded - last.already_loaded)
        RETRIED.inc(summary.retried - last.retried)
        DELETE_FAILURES.inc(summary.delete_failures - last.delete_failures)
        for reason, count in summary.reasons.items():
            QUARANTINED.labels(reason=reason).inc(count - last.reasons.get(reason, 0))
        self._last = dataclasses.replace(summary, reasons=summary.reasons.copy())
