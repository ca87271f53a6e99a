"""`python -m etl_service run|drain`: the long-running service, or drain the queue and report."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable

import prometheus_client
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from etl_service.adapters.sqs import QueueConfigurationError
from etl_service.bootstrap import Wired, bootstrap
from etl_service.config import EtlConfig
from etl_service.entrypoints.metrics import MetricsRecorder
from etl_service.service.consumer import RunSummary
from tokenvault_common.env import ConfigError
from tokenvault_common.logging_setup import configure_logging

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
        f"delete failures   : {summary.delete_failures}",
        f"elapsed           : {summary.seconds:.1f} s",
    ]
    return "\n".join(lines)


def _progress_callback(progress: Progress | None, recorder: MetricsRecorder) -> Callable[[RunSummary], None]:
    task = progress.add_task("draining", total=None) if progress else None

    def on_batch(summary: RunSummary) -> None:
        recorder(summary)
        if progress is not None and task is not None:
            progress.update(
                task,
                description=(
                    f"received {summary.received} · loaded {summary.loaded} · quarantined {summary.quarantined}"
                ),
            )

    return on_batch


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start, and stop cleanly on SIGTERM/SIGINT (in-flight batch committed)."""
    parser = argparse.ArgumentParser(prog="etl_service", description="SQS login events -> user_logins")
    parser.add_argument("mode", choices=["run", "drain"], help="run: service; drain: stop when the queue is empty")
    args = parser.parse_args(argv)
    try:
        config = EtlConfig.from_env(os.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging("etl_service", config.log_level)
    wired = bootstrap(config, wait_seconds=1 if args.mode == "drain" else None)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: wired.consumer.stop())
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port, addr="127.0.0.1")
    recorder = MetricsRecorder()
    log.info("started", extra={"mode": args.mode, "batch_size": config.batch_size})
    try:
        summary = _consume(args.mode, wired, recorder)
    except QueueConfigurationError as error:
        log.error("stopping: %s", error)
        print(f"etl_service: {error}", file=sys.stderr)
        return 1
    finally:
        wired.close()
    log.info(
        "stopped", extra={"received": summary.received, "loaded": summary.loaded, "quarantined": summary.quarantined}
    )
    return 0


def _consume(mode: str, wired: Wired, recorder: MetricsRecorder) -> RunSummary:
    if mode == "run":
        return wired.consumer.run(on_batch=recorder)
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        summary = wired.consumer.drain(on_batch=_progress_callback(progress, recorder))
    print(format_summary(summary))
    return summary
