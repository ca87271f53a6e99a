"""ETL throughput beside a bare SQS receive+delete loop, its core path, and its memory.

`make bench-etl` (or `python -m bench.etl_bench`) starts its own OpenBao, SQS (ministack),
PostgreSQL and vault service process, then measures in one run:
- the bare loop: `--receivers` threads receiving 10 and batch-deleting 10, nothing else;
- the ETL end to end against the same endpoint, same receivers, same message count;
- the core path (event id check + validate + tokenize + load), fed from memory: no SQS at all;
- the peak resident memory of `python -m etl_service run` while it loads `--rss-messages`
  messages from a queue fed as a live one.
Each throughput figure is measured `--rounds` times and the median reported. The last lines
are `figure: <name> <value> <unit>`, one per figure. The core path also reports the CPU each
message costs in each of the three processes that share the machine's cores (read from /proc:
this process's 4 workers, the vault service, PostgreSQL's sessions and background work), which
moves far less with the machine's load than the rate does, and OpenBao's apart (the vault's
Transit calls and the ETL's one row-list `sign` a batch: `etl_core_cpu_openbao_per_message`,
not in `etl_core_cpu_all_per_message`, which keeps its earlier meaning).

`--core-only`: the core path alone (`--messages` x 5 messages a round, as in the full run), no
SQS loops and no memory run: a quick A/B of a change to validation, the vault or the load.
`--batch-size`: the core path's batch (default 1,000, as every earlier figure; the ETL's own
default, ETL_BATCH_SIZE, is 100).

`--sqs-auth`: ministack authenticated, as `make up` runs it (devstack/sqs.py): every loop uses
its identity's key (the producer sends, the ETL and the bare loop receive and delete) on the
stack's `login-queue`, the one queue the shipped policies name. `--stack-queue`: the same queue
use without authentication, the figures to set beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from bench.cpu_time import process_cpu_seconds, server_usage
from bench.report import Figures, parallel, print_figures
from devstack.events import OutgoingEvent, generate_events, send_events
from devstack.postgres import postmaster_pid
from devstack.services import start_vault_service
from devstack.sqs import create_queues, identity_key, sqs_client
from devstack.stack import etl_service_env, temporary_components, vault_service_env
from etl_service.bootstrap import bootstrap
from etl_service.config import EtlConfig
from etl_service.domain.messages import QueueMessage, check_event_id
from etl_service.service.outcomes import BatchOutcome, NoObserver, RunSummary
from etl_service.service.ports import QueueDepth, TakeBack
from tokenvault_common.runtime import tune_for_throughput

REPO = Path(__file__).resolve().parents[1]
console = Console()


class Finish(NoObserver):
    """Notes when the consumer has settled `expected` messages."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done_at = 0.0

    def batch_done(self, batch: BatchOutcome, totals: RunSummary) -> None:
        """Record the moment the last message settles."""
        if not self.done_at and totals.loaded + totals.already_loaded + totals.quarantined >= self.expected:
            self.done_at = time.perf_counter()


class MemoryQueue:
    """The Queue port with nothing behind it: the core path measured without SQS."""

    dead_letter_listing_lease_seconds = 60
    """No DLQ listing is ever taken: any lease will do."""

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        """Nothing to receive."""
        return []

    def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        """Deleting from memory always works."""
        return []

    def dead_letter(self, message: QueueMessage, reason: str, detail: str, body: str) -> None:
        """Dropped: the quarantine table still records it."""

    def change_visibility(self, messages: Sequence[QueueMessage], seconds: int) -> list[QueueMessage]:
        """Nothing to change."""
        return []

    def depth(self) -> QueueDepth:
        """Always empty."""
        return QueueDepth(0, 0, 0)

    def take_back_redriven(self) -> TakeBack:
        """No DLQ behind it."""
        return TakeBack(0)

    def dead_letters_held(self) -> int:
        """No DLQ behind it."""
        return 0


def new_queue(env: dict[str, str], events: Sequence[OutgoingEvent], stack_queue: bool = False) -> tuple[str, str]:
    """A fresh queue pair holding `events` (the stack's `login-queue` pair, drained, for `stack_queue`)."""
    if stack_queue:
        queue_url, dlq_url = env["SQS_QUEUE_URL"], env["SQS_DLQ_URL"]
    else:
        queue_url, dlq_url = create_queues(env["SQS_ENDPOINT_URL"], 60, name=f"bench-{time.time_ns()}")
    sqs = sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer"))
    chunks = [events[i : i + 1000] for i in range(0, len(events), 1000)]
    threads = [threading.Thread(target=send_events, args=(sqs, queue_url, c)) for c in chunks]
    for index in range(0, len(threads), 8):
        for thread in threads[index : index + 8]:
            thread.start()
        for thread in threads[index : index + 8]:
            thread.join()
    return queue_url, dlq_url


def bare_receive_delete(env: dict[str, str], queue_url: str, count: int, receivers: int) -> float:
    """Messages per second of `receivers` threads doing only receive(10) + delete_batch(10), as the ETL's identity."""
    sqs = sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "etl"))
    deleted = [0]
    lock = threading.Lock()

    def loop(_: int) -> None:
        while deleted[0] < count:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not messages:
                continue
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            with lock:
                deleted[0] += len(messages)

    return count / parallel(receivers, loop)


def etl_env(env: dict[str, str], queue_url: str, dlq_url: str, receivers: int) -> dict[str, str]:
    """The ETL's environment for a bench queue."""
    return {
        **etl_service_env(env),
        "ETL_QUEUE_URL": queue_url,
        "ETL_DLQ_URL": dlq_url,
        "ETL_RECEIVERS": str(receivers),
        "ETL_LOG_LEVEL": "WARNING",
    }


def etl_end_to_end(env: dict[str, str], queue_url: str, dlq_url: str, count: int, receivers: int) -> float:
    """Messages per second of the real consumer draining the queue, until the last one settles."""
    finish = Finish(count)
    wired = bootstrap(EtlConfig.from_env(etl_env(env, queue_url, dlq_url, receivers)), wait_seconds=1, observer=finish)
    try:
        started = time.perf_counter()
        wired.consumer.drain()
    finally:
        wired.close()
    return count / (finish.done_at - started)


class CoreCpu:
    """CPU seconds of the core path's processes, read before and after a run: µs per message of each."""

    def __init__(self, vault_pid: int, postmaster: int, openbao_pid: int) -> None:
        self._vault_pid = vault_pid
        self._postmaster = postmaster
        self._openbao_pid = openbao_pid
        self._start = self._reading()

    def _reading(self) -> tuple[float, float, float, float]:
        usage = server_usage(self._postmaster, "tokenvault_")  # the vault's and the ETL's sessions
        return (
            process_cpu_seconds(os.getpid()),
            process_cpu_seconds(self._vault_pid),
            usage.session_seconds + usage.rest_seconds,
            process_cpu_seconds(self._openbao_pid),
        )

    def per_message(self, count: int) -> dict[str, float]:
        """µs of CPU per message since this meter was made: `etl` (this process), `vault`, `postgres`, `openbao`."""
        now = self._reading()
        return {name: (now[i] - self._start[i]) * 1e6 / count for i, name in enumerate(CPU_PROCESSES)}


CPU_PROCESSES = ("etl", "vault", "postgres", "openbao")
"""The processes CoreCpu reads, in its order; `etl_core_cpu_all_per_message` sums the first three."""


def core_path(
    env: dict[str, str],
    events: Sequence[OutgoingEvent],
    batch_size: int,
    workers: int,
    cpu: Callable[[], CoreCpu] | None = None,
    cpu_out: dict[str, float] | None = None,
) -> float:
    """Messages per second through validate + tokenize + load, fed from memory (no SQS at all).

    With `cpu` (a meter started just before the workers) the CPU each message cost each process
    goes into `cpu_out`.
    """
    config = EtlConfig.from_env(etl_env(env, "http://unused/0/q", "http://unused/0/q-dlq", 1))
    wired = bootstrap(config, queue=MemoryQueue())
    sent_ms = int(time.time() * 1000)
    # Each message carries its producer's event_id, checked as the SQS adapter checks it on
    # receipt (check_event_id), so the core path pays for the id check and the own-value check.
    messages = [
        QueueMessage(f"core-{time.time_ns()}-{i}", "r", e.body, sent_ms, 1, *check_event_id(e.event_id))
        for i, e in enumerate(events)
    ]
    batches = iter([messages[i : i + batch_size] for i in range(0, len(messages), batch_size)])
    lock = threading.Lock()

    def work(_: int) -> None:
        while True:
            with lock:
                batch = next(batches, None)
            if batch is None:
                return
            wired.processor.process(batch)

    try:
        meter = cpu() if cpu else None
        rate = len(messages) / parallel(workers, work)
        if meter is not None and cpu_out is not None:
            cpu_out.update(meter.per_message(len(messages)))
        return rate
    finally:
        wired.close()


def peak_rss_over(
    env: dict[str, str], count: int, receivers: int, backlog: int = 10_000, stack_queue: bool = False
) -> tuple[float, float]:
    """(peak resident MB, messages/s) of `python -m etl_service run` while it loads `count` messages.

    The queue is fed as a live queue is: a producer keeps about `backlog` messages waiting
    (the embedded SQS endpoint slows down with hundreds of thousands of messages queued at
    once). The service is stopped with SIGTERM once every message is in user_logins or the
    quarantine.
    """
    queue_url, dlq_url = new_queue(env, [], stack_queue)
    sqs = sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer"))
    depth = sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "etl"))  # the producer may only send
    tag = time.time_ns() % 2**31
    events = generate_events(count, seed=tag, malformed_rate=0.02)
    process = subprocess.Popen(
        [sys.executable, "-m", "etl_service", "run"],
        env={**os.environ, **etl_env(env, queue_url, dlq_url, receivers), "ETL_WAIT_SECONDS": "1"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop_feeding = threading.Event()

    def feed() -> None:
        while not stop_feeding.is_set():
            chunk = [event for _, event in zip(range(1000), events, strict=False)]
            if not chunk:
                return
            send_events(sqs, queue_url, chunk)
            while not stop_feeding.is_set() and visible_messages(depth, queue_url) > backlog:
                time.sleep(0.2)

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.perf_counter()
    feeder.start()
    peak_kb = 0
    try:
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
            while settled(conn, f"gen-{tag}-{count}-%") < count:
                if process.poll() is not None:
                    raise RuntimeError(f"etl_service run exited with {process.returncode}")
                peak_kb = max(peak_kb, resident_kb(process.pid))
                time.sleep(0.5)
        seconds = time.perf_counter() - started
    finally:
        stop_feeding.set()
        process.terminate()
        process.wait(60)
    return peak_kb / 1024, count / seconds


def visible_messages(sqs: Any, queue_url: str) -> int:
    """ApproximateNumberOfMessages of the queue."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def settled(conn: psycopg.Connection, event_pattern: str) -> int:
    """Events matching the pattern that are in user_logins or the quarantine."""
    query = (
        "SELECT (SELECT count(*) FROM user_logins WHERE event_id LIKE %(p)s)"
        " + (SELECT count(*) FROM etl_quarantine WHERE event_id LIKE %(p)s)"
    )
    row = conn.execute(query, {"p": event_pattern}).fetchone()
    return int(row[0]) if row else 0


def resident_kb(pid: int) -> int:
    """VmRSS of a process, in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(
    messages: int,
    rounds: int,
    receivers: int,
    rss_messages: int,
    sqs_auth: bool = False,
    stack_queue: bool = False,
    core_only: bool = False,
    batch_size: int = 1000,
) -> Figures:
    """Start everything, measure, stop everything; figure name -> (median, unit)."""
    samples: dict[str, list[float]] = {"bare": [], "etl": [], "ratio": [], "core": []}
    cpu_samples: dict[str, list[float]] = {process: [] for process in CPU_PROCESSES}
    stack_queue = stack_queue or sqs_auth  # the shipped policies name login-queue only
    with temporary_components("tokenvault-bench-etl-", authenticate_sqs=sqs_auth) as stack:
        env, state_dir = stack.env, stack.state_dir
        service_env = {**vault_service_env(env), "TOKENVAULT_METRICS_PORT": "0", "TOKENVAULT_LOG_LEVEL": "WARNING"}
        certs = state_dir / "certs"
        probe = (certs / "ca.pem", certs / "etl-service.pem", certs / "etl-service-key.pem")
        stack.state.pids["vault_service"] = start_vault_service(service_env, state_dir / "logs" / "vault.log", probe)
        stack.save()
        vault_pid, postmaster, openbao_pid = (
            stack.state.pids["vault_service"],
            postmaster_pid(Path(stack.state.postgres["data_dir"])),
            stack.state.pids["openbao"],
        )

        def meter() -> CoreCpu:
            return CoreCpu(vault_pid, postmaster, openbao_pid)

        for round_no in range(rounds):
            if core_only:
                core_round(env, messages, round_no, samples, cpu_samples, meter, batch_size)
                continue
            events = list(generate_events(messages, seed=1000 + round_no, malformed_rate=0.02))
            pairs = [new_queue(env, events, stack_queue) for _ in range(1 if stack_queue else 2)]
            (bare_queue, _), (etl_queue, etl_dlq) = pairs[0], pairs[-1]
            # The endpoint slows as it accumulates state, so the order alternates between rounds
            # and the ratio is taken per round, from runs side by side.
            for which in ("bare", "etl") if round_no % 2 == 0 else ("etl", "bare"):
                if stack_queue and which != ("bare", "etl")[round_no % 2]:  # one queue: refill it for the second
                    new_queue(env, events, stack_queue)
                if which == "bare":
                    samples["bare"].append(bare_receive_delete(env, bare_queue, messages, receivers))
                else:
                    samples["etl"].append(etl_end_to_end(env, etl_queue, etl_dlq, messages, receivers))
            samples["ratio"].append(samples["etl"][-1] / samples["bare"][-1])
            console.print(
                f"round {round_no + 1}/{rounds}: bare {samples['bare'][-1]:,.0f}/s, "
                f"etl {samples['etl'][-1]:,.0f}/s ({samples['ratio'][-1]:.2f}x)"
            )
            core_round(env, messages, round_no, samples, cpu_samples, meter, batch_size)
        rss_mb, rss_rate = (
            peak_rss_over(env, rss_messages, receivers, stack_queue=stack_queue)
            if rss_messages and not core_only
            else (0.0, 0.0)
        )
    median = {k: statistics.median(v) for k, v in samples.items() if v}
    figures = (
        {}
        if core_only
        else {
            "sqs_bare_receive_delete_per_s": (median["bare"], "msg/s"),
            "etl_end_to_end_per_s": (median["etl"], "msg/s"),
            "ratio_etl_vs_bare_loop": (median["ratio"], "x"),
        }
    )
    figures["etl_core_path_per_s"] = (median["core"], "msg/s")
    for process, values in cpu_samples.items():
        figures[f"etl_core_cpu_{process}_per_message"] = (statistics.median(values), "us")
    three = [cpu_samples[process] for process in CPU_PROCESSES[:3]]
    figures["etl_core_cpu_all_per_message"] = (
        statistics.median([sum(cpus) for cpus in zip(*three, strict=True)]),
        "us",
    )
    if rss_messages and not core_only:
        figures["etl_peak_rss"] = (rss_mb, "MB")
        figures["etl_live_queue_per_s"] = (rss_rate, "msg/s")
    return figures


def core_round(
    env: dict[str, str],
    messages: int,
    round_no: int,
    samples: dict[str, list[float]],
    cpu_samples: dict[str, list[float]],
    meter: Callable[[], CoreCpu],
    batch_size: int = 1000,
) -> None:
    """One round of the core path (`messages` x 5 new events, 4 workers, batches of `batch_size`), into the samples."""
    core_events = list(generate_events(messages * 5, seed=5000 + round_no, malformed_rate=0.02))
    cpu: dict[str, float] = {}
    samples["core"].append(core_path(env, core_events, batch_size=batch_size, workers=4, cpu=meter, cpu_out=cpu))
    for process, value in cpu.items():
        cpu_samples[process].append(value)
    console.print(
        f"core round {round_no + 1}: {samples['core'][-1]:,.0f}/s; CPU per message "
        + ", ".join(f"{process} {value:.1f} µs" for process, value in cpu.items())
    )


def main() -> None:
    """Parse arguments, run, print the table and the figure lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round (end to end)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--receivers", type=int, default=4, help="concurrent receivers (both loops)")
    parser.add_argument("--rss-messages", type=int, default=200_000, help="messages drained for the memory figure")
    parser.add_argument("--sqs-auth", action="store_true", help="ministack authenticated, as `make up` runs it")
    parser.add_argument("--stack-queue", action="store_true", help="login-queue for every loop (as --sqs-auth)")
    parser.add_argument("--core-only", action="store_true", help="the core path alone (--messages x 5 a round)")
    parser.add_argument("--batch-size", type=int, default=1000, help="the core path's batch (the ETL's default: 100)")
    args = parser.parse_args()
    # The end-to-end and core-path ETLs run in this process: it gets the interpreter settings
    # `python -m etl_service` applies (the bare loop beside them runs under the same ones).
    tune_for_throughput()
    figures = run(
        args.messages,
        args.rounds,
        args.receivers,
        args.rss_messages,
        args.sqs_auth,
        args.stack_queue,
        args.core_only,
        args.batch_size,
    )
    title = (
        f"ETL core path, {args.messages * 5:,} messages x {args.rounds} rounds, batches of {args.batch_size:,},"
        f" {os.cpu_count()} cores"
        if args.core_only
        else f"ETL, {args.receivers} receivers, {args.messages:,} messages x {args.rounds} rounds, "
        f"{args.rss_messages:,} for memory, {os.cpu_count()} cores"
        + (", SQS authenticated" if args.sqs_auth else ", login-queue" if args.stack_queue else "")
    )
    print_figures(console, title, figures)


if __name__ == "__main__":
    main()
