"""The consume loop: receivers, a batcher, workers, a lease keeper, a drain check.

Threads and their jobs:
- receivers (service/receivers.py) long-poll SQS while the ledger has room and the gate is open;
- the calling thread groups what they deliver into batches (service/batcher.py) and queues
  each batch for the workers;
- workers run the BatchProcessor (validate, tokenize, load, dead-letter, delete);
- the lease keeper (service/lease_keeper.py) extends leases and sizes the ledger.

`stop()` (SIGTERM): receivers stop; what was received is processed and committed for up to
`shutdown_grace_seconds`; whatever is still held then (a hung vault or database) is released
(visibility 0; one on its last receive is dead-lettered sealed instead, BatchProcessor.release) and
the run returns, so the process exits within the grace period. A
misconfiguration reported by any batch or receive stops the run the same way, releases
everything held and makes run()/drain() raise it.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass
from queue import Empty

from etl_service.domain.messages import QueueMessage
from etl_service.errors import Misconfigured
from etl_service.service.batch import BatchProcessor
from etl_service.service.batcher import Batch, Batcher
from etl_service.service.drain_check import DrainCheck
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.lease_keeper import LeaseKeeper
from etl_service.service.outcomes import BatchOutcome, ConsumerObserver, RunSummary
from etl_service.service.periodic_take_back import DEFAULT_TAKE_BACK_SECONDS, PeriodicTakeBack
from etl_service.service.ports import Queue
from etl_service.service.receivers import SQS_MAX_PER_RECEIVE, Receivers

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
RECEIVER_WAIT_SECONDS = 1.5


@dataclass(frozen=True)
class ConsumerSettings:
    """How the consumer polls, batches, bounds its work, keeps its leases and stops."""

    batch_size: int = 100
    wait_seconds: int = 20
    max_batch_age_seconds: float = 2.0
    receivers: int = 4
    workers: int = 2
    max_in_flight: int = 2_000
    visibility_seconds: int = 60
    shutdown_grace_seconds: float = 20.0
    take_back_seconds: float = DEFAULT_TAKE_BACK_SECONDS
    """Run mode: how often messages SQS's redrive moved to the DLQ are taken back (0: never; PeriodicTakeBack)."""
    held_dead_letters_wait_seconds: float | None = None
    """How long a drain waits for DLQ letters another reader holds before it ends without them (DrainCheck;
    None: drain_check.default_held_wait_seconds of the queue's DLQ listing lease)."""

    @property
    def ledger_floor(self) -> int:
        """The fewest messages the ledger may hold: a batch per worker, a receive per receiver."""
        return min(self.max_in_flight, max(self.batch_size * self.workers, self.receivers * SQS_MAX_PER_RECEIVE))


def ledger_for(settings: ConsumerSettings) -> InFlight:
    """The in-flight ledger the settings call for."""
    return InFlight(max(settings.max_in_flight, SQS_MAX_PER_RECEIVE), settings.ledger_floor)


class Consumer:
    """Receives concurrently, batches, processes in worker threads, until stopped or drained."""

    def __init__(
        self,
        queue: Queue,
        processor: BatchProcessor,
        settings: ConsumerSettings,
        gate: DependencyGate,
        ledger: InFlight,
        observer: ConsumerObserver,
        stop_requested: threading.Event | None = None,
    ) -> None:
        """`stop_requested`: the event stop() sets (its own when None).

        Bootstrap shares it with the vault adapter, whose waits for the vault's quota end once it is set
        (adapters/vault_client.py).
        """
        self._queue = queue
        self._processor = processor
        self._settings = settings
        self._gate = gate
        self._ledger = ledger
        self._observer = observer
        self.stop_requested = stop_requested if stop_requested is not None else threading.Event()
        self._run: _Run | None = None

    @property
    def held(self) -> int:
        """Messages received and not yet deleted, postponed or released."""
        return self._ledger.held()

    def run(self) -> RunSummary:
        """Consume until stop(); raises Misconfigured when the ETL cannot work as configured."""
        return self._execute(until_empty=False)

    def drain(self) -> RunSummary:
        """Consume until the queue holds no message (visible, in flight or delayed), then return."""
        return self._execute(until_empty=True)

    def stop(self) -> None:
        """Stop receiving; what was received is still processed, within the grace period."""
        self.stop_requested.set()
        if self._run is not None:
            self._run.request_stop()

    def _execute(self, until_empty: bool) -> RunSummary:
        run = _Run(self, until_empty)
        self._run = run
        if self.stop_requested.is_set():  # a stop() before the run starts still applies to it
            run.request_stop()
        return run.execute()


class _Run:
    """One run of a Consumer: owns its threads and totals."""

    def __init__(self, consumer: Consumer, until_empty: bool) -> None:
        settings = consumer._settings
        self._c = consumer
        self._settings = settings
        self._until_empty = until_empty
        self._stop = threading.Event()
        self._stop_at = 0.0
        # queue.Queue, not SimpleQueue: CPython 3.11's SimpleQueue.get(timeout=...) interrupted by a signal
        # near its deadline waits for ever (it takes the interruption for the item's arrival and then
        # waits with a negative timeout): an idle ETL's main thread never saw its SIGTERM's stop (CI).
        self._received: queue.Queue[list[QueueMessage]] = queue.Queue()
        self._work: queue.Queue[Batch] = queue.Queue()
        self._busy = 0
        self._lock = threading.Lock()
        self._totals = RunSummary()
        self._fatal: Misconfigured | None = None
        self._finished = threading.Event()
        self._batcher = Batcher(settings.batch_size, settings.max_batch_age_seconds)
        self._drain_check = DrainCheck(
            consumer._queue,
            consumer._ledger,
            consumer._gate,
            settings.held_dead_letters_wait_seconds,
            consumer._observer,
        )
        wait = min(1, settings.wait_seconds) if until_empty else settings.wait_seconds
        self._receivers = Receivers(
            consumer._queue, consumer._ledger, consumer._gate, wait, settings.visibility_seconds,
            self._received.put, self._release_late, self._fail,
        )  # fmt: skip
        self._keeper = LeaseKeeper(consumer._queue, consumer._ledger, settings.visibility_seconds, consumer._observer)
        self._take_back = PeriodicTakeBack(
            consumer._queue, consumer._gate, settings.take_back_seconds, consumer._observer, self._fail
        )

    def request_stop(self) -> None:
        """Begin the bounded shutdown."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()

    def execute(self) -> RunSummary:
        started = time.monotonic()
        self._keeper.start()
        workers = [
            threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            for i in range(self._settings.workers)
        ]
        for thread in workers:
            thread.start()
        self._receivers.start(self._settings.receivers, self._stop)
        if not self._until_empty and self._settings.take_back_seconds > 0:
            self._take_back.start(self._stop)
        try:
            self._batch_loop()
            self._shut_down()
        finally:
            self._finished.set()
            self._keeper.stop()
        if self._fatal is not None:
            raise self._fatal
        with self._lock:  # a copy: a worker stuck past the grace period may still report later
            totals = copy.deepcopy(self._totals)
        totals.seconds = time.monotonic() - started
        totals.taken_back_from_dlq = self._drain_check.taken_back + self._take_back.taken_back
        totals.crash_looped = self._drain_check.crash_looped + self._take_back.crash_looped
        totals.dead_letters_held_unread = self._drain_check.held_unread if self._until_empty else 0
        totals.dlq_unread = self._drain_check.dlq_unread and self._until_empty
        return totals

    # -- the calling thread: batching, then the bounded shutdown ----------------------------------

    def _batch_loop(self) -> None:
        batcher = self._batcher
        while not self._stop.is_set():
            try:
                wait = min(batcher.seconds_until_due(time.monotonic(), POLL_SECONDS), POLL_SECONDS)
                chunk = self._received.get(timeout=wait)
                self._submit(batcher.add(chunk, time.monotonic()))
            except Empty:
                pass
            self._submit(batcher.due(time.monotonic()))
            if self._until_empty and self._idle() and self._drained():
                log.info("queue drained", extra={"dead_letters_held_unread": self._drain_check.held_unread})
                with self._lock:  # nothing is left in the queue: another consumer settled what an error left
                    self._totals.errored.clear()
                self.request_stop()

    def _drained(self) -> bool:
        """The drain check; a misconfiguration it meets (e.g. the DLQ refused) stops the run like any other."""
        try:
            return self._drain_check.drained()
        except Misconfigured as error:
            self._fail(error)
            return False

    def _shut_down(self) -> None:
        """Finish what is held within the grace period, then release whatever is left."""
        deadline = self._stop_at + self._settings.shutdown_grace_seconds
        while time.monotonic() < deadline:  # after a misconfiguration, workers release instead of processing
            while not self._received.empty():
                self._submit(self._batcher.add(self._received.get(), time.monotonic()))
            self._submit(self._batcher.flush(time.monotonic()))
            if self._idle() and not self._c._ledger.held():
                break
            time.sleep(POLL_SECONDS / 2)
        # A long poll still running releases what it returns (receivers see the stop); wait a
        # little for the short polls of a drain, not for a service's 20 s ones.
        receivers_deadline = min(deadline, time.monotonic() + RECEIVER_WAIT_SECONDS)
        while self._receivers.alive() and time.monotonic() < receivers_deadline:
            time.sleep(POLL_SECONDS / 2)
        leftover = self._c._ledger.held_messages()
        if leftover:
            log.warning("shutdown grace over: releasing unfinished work", extra={"messages": len(leftover)})
            self._release(leftover, "the ETL stopped and its shutdown grace period ran out")

    def _idle(self) -> bool:
        with self._lock:
            return self._busy == 0 and self._work.empty() and self._received.empty() and not self._batcher.pending

    def _submit(self, batches: list[Batch]) -> None:
        for batch in batches:
            with self._lock:
                self._busy += 1
            self._work.put(batch)

    # -- workers ---------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            try:
                batch = self._work.get(timeout=POLL_SECONDS)
            except Empty:
                if self._finished.is_set():
                    return
                continue
            try:
                if self._fatal is not None:  # stopping for a misconfiguration: do not even try
                    outcome = self._c._processor.release(batch, "a misconfiguration stopped the ETL")
                    outcome.received = len(batch)
                    with self._lock:
                        self._totals.released_at_stop += outcome.released
                else:
                    outcome = self._c._processor.process(batch)
            finally:
                self._c._ledger.settle(batch)
                with self._lock:
                    self._busy -= 1
            self._done(batch, outcome)

    def _done(self, batch: Batch, outcome: BatchOutcome) -> None:
        if outcome.failed_dependency:
            self._c._gate.report_failure(outcome.failed_dependency, outcome.retry_after)
        if outcome.fatal is not None:
            self._fail(outcome.fatal)
        with self._lock:
            if self._totals.errored:  # messages an error held back earlier may have settled now
                self._totals.errored.difference_update(m.message_id for m in batch)
            self._totals.add(outcome)
            self._c._observer.batch_done(outcome, self._totals)
        self._c._observer.held_messages(self._c._ledger.held())

    def _fail(self, error: Misconfigured) -> None:
        """Stop for a misconfiguration: what is held is released (by workers, then _shut_down); run raises."""
        with self._lock:
            first = self._fatal is None
            self._fatal = self._fatal or error
        if not first:
            return
        log.error("stopping: %s", error)
        self.request_stop()

    def _release_late(self, messages: list[QueueMessage]) -> None:
        """Messages a long poll returned after the stop: visible again at once."""
        self._release(messages, "received as the ETL stopped")

    def _release(self, messages: list[QueueMessage], why: str) -> None:
        """Release held messages at a stop; one on its last receive is dead-lettered sealed instead (R20-10).

        Counted in the totals (released_at_stop; a dead-lettered one under its reason, as unprocessed).
        """
        outcome = self._c._processor.release(messages, why)
        self._c._ledger.settle(messages)
        with self._lock:
            self._totals.released_at_stop += outcome.released
            self._totals.quarantined += outcome.quarantined
            self._totals.reasons.update(outcome.reasons)
            self._totals.delete_failures += outcome.delete_failures
