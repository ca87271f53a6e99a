"""`python -m etl_service run|drain`: the long-running service, or drain the queue and report.

Exit codes in EXIT_CODES; every setting in `--help` (from etl_service/config.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from etl_service.adapters.dead_letter_queue import LISTING_LEASE_SECONDS
from etl_service.bootstrap import bootstrap
from etl_service.config import EtlConfig, settings_help
from etl_service.entrypoints import dead_letters
from etl_service.entrypoints.health import serve_health
from etl_service.entrypoints.metrics import MetricsObserver, mark_dependencies_up
from etl_service.errors import Misconfigured
from etl_service.service.drain_check import default_held_wait_seconds
from etl_service.service.outcomes import (
    CRASH_LOOP,
    DEPENDENCY_UNAVAILABLE,
    PROCESSING_FAILED,
    RELEASED_ON_LAST_RECEIVE,
    BatchOutcome,
    ConsumerObserver,
    FanOut,
    NoObserver,
    RunSummary,
)
from tokenvault_common.env import ConfigError
from tokenvault_common.exit_watchdog import exit_within
from tokenvault_common.logging_setup import configure_logging
from tokenvault_common.metrics_endpoint import MetricsEndpointError, serve_metrics, tls_context
from tokenvault_common.runtime import tune_for_throughput

log = logging.getLogger("etl_service")


def format_summary(summary: RunSummary) -> str:
    """The end-of-run report, for people."""
    lines = [
        f"messages received : {summary.received}",
        f"rows loaded       : {summary.loaded}",
        f"already loaded    : {summary.already_loaded}  (redelivered or replayed; skipped)",
        f"quarantined       : {summary.quarantined}",
    ]
    lines += [f"  - {reason}: {count}" for reason, count in sorted(summary.reasons.items())]
    lines += [
        f"back to the DLQ   : {summary.returned_to_dlq}  (dead letters moved back to the queue as they were;"
        " returned unchanged)",
        f"left for retry    : {summary.retried}",
        f"released at stop  : {summary.released_at_stop}",
        f"taken back (DLQ)  : {summary.taken_back_from_dlq}  (moved there by the redrive policy)",
        f"crash loops       : {summary.crash_looped}  (moved there again after a take-back: sealed in the DLQ as"
        f" {CRASH_LOOP}, not loaded)",
        f"held in DLQ       : {summary.dead_letters_held_unread}  (held by another reader or delayed when the drain"
        " stopped waiting; unread, left in the DLQ)",
        "DLQ read whole    : " + ("no (each take-back's listing was cut short)" if summary.dlq_unread else "yes"),
        f"unprocessed (err) : {summary.unprocessed_after_errors}  (left in the queue by an error:"
        f" {len(summary.errored)}; quarantined as processing_failed: {summary.reasons[PROCESSING_FAILED]},"
        f" as dependency_unavailable: {summary.reasons[DEPENDENCY_UNAVAILABLE]},"
        f" as released_on_last_receive: {summary.reasons[RELEASED_ON_LAST_RECEIVE]})",
        f"delete failures   : {summary.delete_failures}",
        f"elapsed           : {summary.seconds:.1f} s",
    ]
    return "\n".join(lines)


class ProgressObserver(NoObserver):
    """Shows running totals in a terminal progress line."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("draining", total=None)

    def batch_done(self, batch: BatchOutcome, totals: RunSummary) -> None:
        """Refresh the line."""
        self._progress.update(
            self._task,
            description=f"received {totals.received} · loaded {totals.loaded} · quarantined {totals.quarantined}",
        )

    def dependency_changed(self, dependency: str, up: bool) -> None:
        """Say when receiving pauses."""
        state = "back" if up else "down: receiving paused"
        self._progress.console.print(f"{dependency} {state}")


HELD_WAIT_SECONDS = default_held_wait_seconds(LISTING_LEASE_SECONDS)
"""How long a drain waits for dead letters another reader holds (the SQS adapter's DLQ listing lease, plus a margin)."""

EXIT_OK, EXIT_MISCONFIGURED, EXIT_CONFIG, EXIT_UNPROCESSED = 0, 1, 2, 3
EXIT_MARGIN_SECONDS = 8.0
"""After SIGTERM the process exits within ETL_SHUTDOWN_GRACE_SECONDS plus this (its pools and channels
closed), or is ended there (exit_watchdog); 20 + 8 s stays inside compose's 30 s and Kubernetes' 60 s."""
EXIT_CODES = f"""exit status:
  0  done (drain: the queue is empty and every message this drain received was loaded or
     quarantined for what it holds - a message an error left behind was settled since, by
     this drain or by another consumer, which may have quarantined it; or stopped by
     SIGTERM/SIGINT before any error met a message)
  1  cannot work as configured: a start-up check failed, or an identity, permission, table or
     queue was refused while running (every held message was released first); or the process
     was still running {EXIT_MARGIN_SECONDS:.0f} s past its shutdown grace period after SIGTERM/SIGINT
     (a hang: stderr shows "Timeout (...)!" and each thread's stack; unsettled messages return to the
     queue at their lease's end)
  2  invalid settings
  3  drain only: an error kept messages from loading - a dependency down or a failure left them
     in the queue when the drain was stopped, or processing failed on every receive and the
     ETL quarantined them as processing_failed (their sealed bodies wait in the DLQ:
     `dead-letters resend` after the fix); or dead letters another reader held (or delayed)
     were still unread when the drain stopped waiting for them ({HELD_WAIT_SECONDS:.0f} s): they stay in the DLQ,
     and the next drain or `dead-letters redrive` takes back any the redrive policy moved; or the DLQ
     could not be read whole (each take-back's listing was cut short - more letters than one
     listing reads, or it outlasted its lease - for as long): a letter to take back may be left
     in it; nothing was lost either way"""


DEAD_LETTERS = "operators: python -m etl_service dead-letters list|show|resend|redrive|erase|delete  (--help for each)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etl_service",
        description="SQS login events -> user_logins (ip and device_id tokenized by the vault service)",
        epilog=f"{settings_help()}\n\n{EXIT_CODES}\n\n{DEAD_LETTERS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "mode",
        choices=["run", "drain"],
        help="run: the long-running service; drain: stop when the queue is empty and print a summary",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, check every dependency, consume; SIGTERM/SIGINT stop within the grace period."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dead-letters"]:
        return dead_letters.main(argv[1:])
    args = _parser().parse_args(argv)
    configure_logging("etl_service", os.environ.get("ETL_LOG_LEVEL", "INFO"), native=True)
    try:
        config = EtlConfig.from_env(os.environ)
    except (ConfigError, ValueError) as error:
        _say(f"invalid settings: {error}")
        return EXIT_CONFIG
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    show_progress = args.mode == "drain" and console.is_terminal
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        observers: list[ConsumerObserver] = [MetricsObserver()]
        if show_progress:
            observers.append(ProgressObserver(progress))
        try:
            _serve_metrics_and_health(config)
        except Misconfigured as error:
            return _cannot_start(error)
        try:
            wired = bootstrap(config, wait_seconds=1 if args.mode == "drain" else None, observer=FanOut(*observers))
        except Misconfigured as error:
            return _cannot_start(error)

        def stop(*_: object) -> None:
            exit_within(config.shutdown_grace_seconds + EXIT_MARGIN_SECONDS)
            wired.consumer.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        try:
            wired.check_dependencies()
            mark_dependencies_up()
            tune_for_throughput()
            started = {"mode": args.mode, "batch_size": config.batch_size, "receivers": config.receivers}
            if args.mode == "run":  # how often it takes back what SQS's redrive moved (0: never)
                started["take_back_seconds"] = config.take_back_seconds
            log.info("started", extra=started)
            summary = wired.consumer.drain() if args.mode == "drain" else wired.consumer.run()
        except Misconfigured as error:
            return _cannot_start(error)
        finally:
            wired.close()
    if args.mode == "drain":
        print(format_summary(summary))
    log.info(
        "stopped",
        extra={
            "received": summary.received,
            "loaded": summary.loaded,
            "quarantined": summary.quarantined,
            "released": summary.released_at_stop,
            "unprocessed_after_errors": summary.unprocessed_after_errors,
        },
    )
    return drain_status(summary) if args.mode == "drain" else EXIT_OK


def drain_status(summary: RunSummary) -> int:
    """A drain's exit code (EXIT_CODES); says what it left unsettled, if anything."""
    status = EXIT_OK
    if summary.unprocessed_after_errors:
        _say(
            f"{summary.unprocessed_after_errors} message(s) left unprocessed because of errors: {len(summary.errored)}"
            f" still in the queue, {summary.reasons[PROCESSING_FAILED]} quarantined as {PROCESSING_FAILED},"
            f" {summary.reasons[DEPENDENCY_UNAVAILABLE]} as {DEPENDENCY_UNAVAILABLE},"
            f" {summary.reasons[RELEASED_ON_LAST_RECEIVE]} as {RELEASED_ON_LAST_RECEIVE}"
            " (see the log above; `dead-letters list`)"
        )
        status = EXIT_UNPROCESSED
    if summary.crash_looped:
        _say(
            f"{summary.crash_looped} message(s) sealed in the DLQ as {CRASH_LOOP}: the redrive policy moved them again"
            " after a take-back, so each may crash the ETL. Not loaded: `dead-letters show <message id>` each, then"
            " `dead-letters resend` it once the cause is fixed"
        )
        status = EXIT_UNPROCESSED
    if summary.dead_letters_held_unread:
        _say(
            f"{summary.dead_letters_held_unread} dead letter(s) held unread: another reader held them (or they were"
            " delayed) past the drain's wait, so one may be a message the redrive policy moved."
            " Nothing is lost: they stay in the DLQ, and the next drain or `dead-letters redrive` takes back any"
            " such message"
        )
        status = EXIT_UNPROCESSED
    if summary.dlq_unread:
        _say(
            "the DLQ could not be read whole: each take-back's listing was cut short (more dead letters than one"
            " listing reads, or it outlasted its lease) until the drain stopped trying, so one unread may be a"
            " message the redrive policy moved. Nothing is lost: they stay in the DLQ; `dead-letters"
            " list` to see them, then `dead-letters redrive` until it reads the DLQ whole"
        )
        status = EXIT_UNPROCESSED
    return status


def _serve_metrics_and_health(config: EtlConfig) -> None:
    """Metrics (over TLS when configured) and /healthz; Misconfigured when they cannot be served."""
    if config.metrics_port:
        try:
            context = tls_context(config.metrics_tls) if config.metrics_tls else None
            serve_metrics(config.metrics_port, config.metrics_address, context, "ETL_METRICS_PORT")
        except MetricsEndpointError as error:
            raise Misconfigured(str(error)) from None
    if config.health_address:
        serve_health(config.health_address)


def _cannot_start(error: Misconfigured) -> int:
    _say(f"stopping: {error}", dependency=error.dependency)
    return EXIT_MISCONFIGURED


def _say(message: str, **extra: str) -> None:
    """An error as a JSON log line; also as plain text when a person watches stderr."""
    log.error(message, extra=extra)
    if sys.stderr.isatty():
        print(f"etl_service: {message}", file=sys.stderr)
