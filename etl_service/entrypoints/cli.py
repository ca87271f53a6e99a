"""`python -m etl_service run|drain`: the long-running service, or drain the queue and report."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import prometheus_client
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from etl_service.adapters.sqs import QueueConfigurationError
from etl_service.bootstrap import bootstrap
from etl_service.config import EtlConfig
from etl_service.entrypoints.metrics import MetricsObserver
from etl_service.service.outcomes import BatchOutcome, ConsumerObserver, FanOut, NoObserver, RunSummary
from tokenvault_common.env import ConfigError
from tokenvault_common.logging_setup import configure_logging
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
        f"left for retry    : {summary.retried}",
        f"released at stop  : {summary.released_at_stop}",
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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start, and stop cleanly on SIGTERM/SIGINT (in-flight work committed)."""
    parser = argparse.ArgumentParser(prog="etl_service", description="SQS login events -> user_logins")
    parser.add_argument("mode", choices=["run", "drain"], help="run: service; drain: stop when the queue is empty")
    args = parser.parse_args(argv)
    try:
        config = EtlConfig.from_env(os.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging("etl_service", config.log_level)
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    show_progress = args.mode == "drain" and console.is_terminal
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        observers: list[ConsumerObserver] = [MetricsObserver()]
        if show_progress:
            observers.append(ProgressObserver(progress))
        try:
            wired = bootstrap(config, wait_seconds=1 if args.mode == "drain" else None, observer=FanOut(*observers))
        except QueueConfigurationError as error:
            log.error("cannot start: %s", error)
            print(f"etl_service: {error}", file=sys.stderr)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: wired.consumer.stop())
        if config.metrics_port:
            prometheus_client.start_http_server(config.metrics_port, addr=config.metrics_address)
        tune_for_throughput()
        log.info("started", extra={"mode": args.mode, "batch_size": config.batch_size, "receivers": config.receivers})
        try:
            summary = wired.consumer.drain() if args.mode == "drain" else wired.consumer.run()
        except QueueConfigurationError as error:
            log.error("stopping: %s", error)
            print(f"etl_service: {error}", file=sys.stderr)
            return 1
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
        },
    )
    return 0
