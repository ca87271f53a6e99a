"""The consume loop: receive into batches, process, repeat, until told to stop or drained."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from etl_service.domain.messages import QueueMessage
from etl_service.service.batch import BatchOutcome, BatchProcessor
from etl_service.service.ports import Queue, TransientError

log = logging.getLogger(__name__)

SQS_MAX_PER_RECEIVE = 10


@dataclass
class RunSummary(BatchOutcome):
    """Totals over a run: the batch counters summed, plus the elapsed time."""

    seconds: float = 0.0

    def add(self, batch: BatchOutcome) -> None:
        """Fold one batch into the totals."""
        self.received += batch.received
        self.loaded += batch.loaded
        self.already_loaded += batch.already_loaded
        self.quarantined += batch.quarantined
        self.retried += batch.retried
        self.delete_failures += batch.delete_failures
        self.reasons.update(batch.reasons)


@dataclass(frozen=True)
class ConsumerSettings:
    """How the consumer batches and polls."""

    batch_size: int = 100
    wait_seconds: int = 20
    max_batch_age_seconds: float = 2.0


class Consumer:
    """Receives messages, groups them into batches by size or age, and processes each batch."""

    def __init__(self, queue: Queue, processor: BatchProcessor, settings: ConsumerSettings) -> None:
        self._queue = queue
        self._processor = processor
        self._settings = settings
        self.stop_requested = threading.Event()

    def run(self, on_batch: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Consume until stop() is called; finish the batch in hand before returning."""
        return self._loop(until_empty=False, on_batch=on_batch)

    def drain(self, on_batch: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Consume until the queue holds no message at all (nor any in flight), then return."""
        return self._loop(until_empty=True, on_batch=on_batch)

    def stop(self) -> None:
        """Stop receiving; the batch in hand is still committed."""
        self.stop_requested.set()

    def _loop(self, until_empty: bool, on_batch: Callable[[RunSummary], None] | None) -> RunSummary:
        summary = RunSummary()
        started = time.monotonic()
        wait = 1 if until_empty else self._settings.wait_seconds
        while not self.stop_requested.is_set():
            batch = self._collect(wait)
            if batch:
                summary.add(self._processor.process(batch))
                if on_batch:
                    on_batch(summary)
            elif until_empty and self._queue_is_empty():
                break
        summary.seconds = time.monotonic() - started
        return summary

    def _collect(self, wait_seconds: int) -> list[QueueMessage]:
        batch: list[QueueMessage] = []
        deadline = time.monotonic() + self._settings.max_batch_age_seconds
        while len(batch) < self._settings.batch_size and not self.stop_requested.is_set():
            want = min(SQS_MAX_PER_RECEIVE, self._settings.batch_size - len(batch))
            try:
                received = self._queue.receive(want, wait_seconds if not batch else 0)
            except TransientError as error:
                log.warning("receive failed; retrying: %s", error)
                self.stop_requested.wait(2)
                break
            batch.extend(received)
            if not received or time.monotonic() >= deadline:
                break
        return batch

    def _queue_is_empty(self) -> bool:
        try:
            return self._queue.depth().empty
        except TransientError:
            return False
