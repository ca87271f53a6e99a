"""Prometheus metrics of the ETL (exposed when ETL_METRICS_PORT is set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from etl_service.service.outcomes import CRASH_LOOP, BatchOutcome, RunSummary

RECEIVED = Counter("etl_messages_received_total", "Messages received from the source queue")
LOADED = Counter("etl_rows_loaded_total", "Rows inserted into user_logins")
DUPLICATES = Counter(
    "etl_rows_duplicate_total", "Rows skipped because the same event was already loaded (replays, not reused ids)"
)
QUARANTINED = Counter("etl_messages_quarantined_total", "Messages sent to the DLQ", ["reason"])
RETURNED = Counter(
    "etl_dead_letters_returned_total",
    "The ETL's own dead letters moved back to the source queue (a DLQ redrive), sent back to the DLQ unchanged",
)
RETRIED = Counter("etl_messages_retried_total", "Messages postponed for redelivery (dependency failure)")
DELETE_FAILURES = Counter("etl_delete_failures_total", "Messages whose deletion SQS refused")
LEASES_EXTENDED = Counter("etl_visibility_extensions_total", "Message leases extended by the heartbeat")
BATCH_SECONDS = Histogram(
    "etl_batch_duration_seconds",
    "Time to validate, tokenize, load and delete one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MESSAGE_AGE = Histogram(
    "etl_message_age_seconds",
    "Seconds from a message's SentTimestamp until it was settled",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
HELD = Gauge("etl_messages_in_flight", "Messages received and not yet settled")
TAKEN_BACK = Counter(
    "etl_dead_letters_taken_back_total",
    "Messages SQS's redrive moved to the DLQ (in clear, no reason) that run mode's periodic take-back moved back",
)
DRAIN_CHECK_FAILURES = Counter(
    "etl_drain_check_failures_total",
    "Drain checks that failed on a dependency (the drain does not end, and checks again)",
    ["dependency"],
)
DEPENDENCY_UP = Gauge("etl_dependency_up", "0 while a dependency outage pauses receiving", ["dependency"])
DEPENDENCIES = ("sqs", "vault", "database")


def mark_dependencies_up() -> None:
    """Export etl_dependency_up for every dependency from the start (the start-up checks passed)."""
    for dependency in DEPENDENCIES:
        DEPENDENCY_UP.labels(dependency=dependency).set(1)


class MetricsObserver:
    """Implements ConsumerObserver by updating the Prometheus metrics above."""

    def batch_done(self, batch: BatchOutcome, totals: RunSummary) -> None:
        """Count the batch, its latency and the age of its messages."""
        RECEIVED.inc(batch.received)
        LOADED.inc(batch.loaded)
        DUPLICATES.inc(batch.already_loaded)
        RETRIED.inc(batch.retried)
        RETURNED.inc(batch.returned_to_dlq)
        DELETE_FAILURES.inc(batch.delete_failures)
        for reason, count in batch.reasons.items():
            QUARANTINED.labels(reason=reason).inc(count)
        if batch.failed_dependency is None:
            BATCH_SECONDS.observe(batch.seconds)
        for age in batch.ages_seconds:
            MESSAGE_AGE.observe(age)

    def leases_extended(self, count: int) -> None:
        """Count heartbeat extensions."""
        LEASES_EXTENDED.inc(count)

    def dependency_changed(self, dependency: str, up: bool) -> None:
        """Flip the dependency's gauge."""
        DEPENDENCY_UP.labels(dependency=dependency).set(1 if up else 0)

    def held_messages(self, count: int) -> None:
        """Track the in-flight gauge."""
        HELD.set(count)

    def drain_check_failed(self, dependency: str) -> None:
        """Count the failed drain check under its dependency."""
        DRAIN_CHECK_FAILURES.labels(dependency=dependency).inc()

    def taken_back(self, count: int) -> None:
        """Count redriven messages run mode took back from the DLQ."""
        TAKEN_BACK.inc(count)

    def crash_looped(self, count: int) -> None:
        """Count crash loops a take-back sealed in the DLQ, as dead letters of their reason."""
        QUARANTINED.labels(reason=CRASH_LOOP).inc(count)
