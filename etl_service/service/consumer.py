"""The consume loop: concurrent receivers, batches by size or age, a worker pool, a heartbeat.

Threads and their jobs:
- receivers (`receivers` of them) long-poll SQS, 10 messages per call, but only after
  reserving room in the in-flight ledger (backpressure) and while the dependency gate is open;
- the calling thread groups what they receive into batches (flushed by size or age) and hands
  each batch to the worker pool;
- workers run the BatchProcessor (validate, tokenize, load, dead-letter, delete);
- the heartbeat extends the visibility of messages held for long.

`stop()` (SIGTERM): receivers stop, every message already received is processed and
committed, messages a receiver gets after the stop are released at once, then it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from queue import Empty, SimpleQueue

from etl_service.domain.messages import QueueMessage
from etl_service.service.batch import BatchProcessor
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.outcomes import ConsumerObserver, NoObserver, RunSummary
from etl_service.service.ports import Queue, TransientError

log = logging.getLogger(__name__)

SQS_MAX_PER_RECEIVE = 10
DEPTH_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class ConsumerSettings:
    """How the consumer polls, batches, bounds its work and keeps its leases."""

    batch_size: int = 100
    wait_seconds: int = 20
    max_batch_age_seconds: float = 2.0
    receivers: int = 4
    workers: int = 2
    max_in_flight: int = 2_000
    visibility_seconds: int = 60


class Consumer:
    """Receives concurrently, batches, processes in a worker pool, until stopped or drained."""

    def __init__(
        self,
        queue: Queue,
        processor: BatchProcessor,
        settings: ConsumerSettings,
        gate: DependencyGate | None = None,
        observer: ConsumerObserver | None = None,
    ) -> None:
        self._queue = queue
        self._processor = processor
        self._settings = settings
        self._observer = observer or NoObserver()
        self._gate = gate or DependencyGate(lambda: None, self._observer)
        self._inflight = InFlight(max(settings.max_in_flight, SQS_MAX_PER_RECEIVE))
        self.stop_requested = threading.Event()
        self._run_stop = threading.Event()

    @property
    def held(self) -> int:
        """Messages received and not yet deleted, postponed or released."""
        return self._inflight.held()

    def run(self) -> RunSummary:
        """Consume until stop(); commit everything received before returning."""
        return self._new_run(until_empty=False).execute()

    def drain(self) -> RunSummary:
        """Consume until the queue holds no message (visible, in flight or delayed), then return."""
        return self._new_run(until_empty=True).execute()

    def stop(self) -> None:
        """Stop receiving; what was received is still processed and committed."""
        self.stop_requested.set()
        self._run_stop.set()

    def _new_run(self, until_empty: bool) -> _Run:
        # Each run stops on its own event (a finished drain sets it); a stop() requested
        # before the run starts still applies to it.
        self._run_stop = threading.Event()
        if self.stop_requested.is_set():
            self._run_stop.set()
        return _Run(
            self._queue, self._processor, self._settings, self._gate, self._inflight, self._observer,
            self._run_stop, until_empty,
        )  # fmt: skip


class _Run:
    """One run of a Consumer: owns its threads and totals."""

    def __init__(
        self,
        queue: Queue,
        processor: BatchProcessor,
        settings: ConsumerSettings,
        gate: DependencyGate,
        inflight: InFlight,
        observer: ConsumerObserver,
        stop: threading.Event,
        until_empty: bool,
    ) -> None:
        self._queue = queue
        self._processor = processor
        self._settings = settings
        self._gate = gate
        self._inflight = inflight
        self._observer = observer
        self._stop = stop
        self._until_empty = until_empty
        self._wait = min(1, self._settings.wait_seconds) if until_empty else self._settings.wait_seconds
        self._received: SimpleQueue[list[QueueMessage]] = SimpleQueue()
        self._totals = RunSummary()
        self._totals_lock = threading.Lock()
        self._heartbeat_stop = threading.Event()
        self._next_depth_check = 0.0
        self._fatal: Exception | None = None

    def execute(self) -> RunSummary:
        started = time.monotonic()
        receivers = [
            threading.Thread(target=self._guarded, args=(self._receive_loop,), name=f"receiver-{i}", daemon=True)
            for i in range(self._settings.receivers)
        ]
        heartbeat = threading.Thread(target=self._guarded, args=(self._heartbeat_loop,), name="heartbeat", daemon=True)
        heartbeat.start()
        with ThreadPoolExecutor(self._settings.workers, thread_name_prefix="worker") as workers:
            for thread in receivers:
                thread.start()
            self._batch_loop(workers, receivers)
        self._heartbeat_stop.set()
        heartbeat.join()
        self._totals.seconds = time.monotonic() - started
        if self._fatal is not None:
            raise self._fatal
        return self._totals

    def _guarded(self, job: Callable[[], None]) -> None:
        """Run a thread's job; an error nothing can retry stops the whole run, and run() raises it."""
        try:
            job()
        except Exception as error:
            log.error("stopping: %s failed: %s", threading.current_thread().name, type(error).__name__)
            self._fatal = self._fatal or error
            self._stop.set()

    # -- receivers ---------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        stop, inflight = self._stop, self._inflight
        backoff = 0.5
        while not stop.is_set():
            if not inflight.reserve(SQS_MAX_PER_RECEIVE, stop):
                continue
            # The gate is checked after the wait for room: that wait ends when a batch settles,
            # which may be the very batch that found a dependency down.
            if not self._gate.wait_open(stop):
                inflight.cancel(SQS_MAX_PER_RECEIVE)
                continue
            try:
                messages = self._queue.receive(SQS_MAX_PER_RECEIVE, self._wait)
            except TransientError as error:
                inflight.cancel(SQS_MAX_PER_RECEIVE)
                log.warning("receive failed; retrying in %.1f s: %s", backoff, error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 20.0)
                continue
            backoff = 0.5
            inflight.admit(SQS_MAX_PER_RECEIVE, messages, self._settings.visibility_seconds)
            if messages and stop.is_set():
                self._release(messages)
                return
            if messages:
                self._received.put(messages)

    def _release(self, messages: list[QueueMessage]) -> None:
        try:
            self._queue.change_visibility(messages, 0)
        except TransientError as error:
            log.warning("release at stop failed (the lease runs out instead): %s", error)
        self._inflight.settle(messages)
        with self._totals_lock:
            self._totals.released_at_stop += len(messages)

    # -- batching and workers ------------------------------------------------------------------

    def _batch_loop(self, workers: ThreadPoolExecutor, receivers: list[threading.Thread]) -> None:
        stop, settings = self._stop, self._settings
        pending: list[QueueMessage] = []
        oldest = 0.0
        while True:
            timeout = 0.1 if not pending else max(oldest + settings.max_batch_age_seconds - time.monotonic(), 0.0)
            try:
                chunk = self._received.get(timeout=min(timeout, 0.1))
                if not pending:
                    oldest = time.monotonic()
                pending += chunk
            except Empty:
                pass
            stopping = stop.is_set()
            while len(pending) >= settings.batch_size or (
                pending and (stopping or time.monotonic() - oldest >= settings.max_batch_age_seconds)
            ):
                batch, pending = pending[: settings.batch_size], pending[settings.batch_size :]
                workers.submit(self._guarded, partial(self._work, batch))
                oldest = time.monotonic()
            if stopping and not any(t.is_alive() for t in receivers) and self._received.empty():
                return
            if stopping:
                continue
            if self._until_empty and not pending and self._drained():
                log.info("queue drained")
                stop.set()

    def _work(self, batch: list[QueueMessage]) -> None:
        try:
            outcome = self._processor.process(batch)
        finally:
            self._inflight.settle(batch)
        if outcome.failed_dependency:
            self._gate.report_failure(outcome.failed_dependency)
        with self._totals_lock:
            self._totals.add(outcome)
            self._observer.batch_done(outcome, self._totals)
        self._observer.held_messages(self._inflight.held())

    def _drained(self) -> bool:
        """Nothing held or waiting for a batch, and SQS counts no message visible, in flight or delayed.

        A receive racing this check holds messages that SQS counts as in flight, so the check
        cannot pass while anything is unsettled; a late receive after the stop is released.
        """
        if self._inflight.held() or not self._received.empty():
            return False
        if self._gate.down or time.monotonic() < self._next_depth_check:
            return False
        self._next_depth_check = time.monotonic() + DEPTH_CHECK_SECONDS
        try:
            return self._queue.depth().empty
        except TransientError:
            return False

    # -- heartbeat -----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        lease = self._settings.visibility_seconds
        period = max(lease / 4, 0.25)
        while not self._heartbeat_stop.wait(period):
            due = self._inflight.expiring(within_seconds=lease / 2)
            if not due:
                continue
            try:
                failed = {m.receipt_handle for m in self._queue.change_visibility(due, lease)}
            except TransientError as error:
                log.warning("visibility heartbeat failed: %s", error)
                continue
            extended = [m for m in due if m.receipt_handle not in failed]
            self._inflight.extended(extended, lease)
            self._observer.leases_extended(len(extended))
            log.info("leases extended", extra={"messages": len(extended), "lease_s": lease})
