"""The lease keeper: extends the visibility of held messages before it runs out, and sizes the ledger.

Every quarter lease it extends the messages whose lease would end within half a lease by the next check. Every
second it measures how fast messages settle and lets the ledger hold no more than that rate
finishes within half a lease (InFlight.adapt).
"""

from __future__ import annotations

import logging
import threading
import time

from etl_service.service.inflight import InFlight
from etl_service.service.outcomes import ConsumerObserver
from etl_service.service.ports import Queue

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 1.0


class LeaseKeeper:
    """A thread extending leases and adapting the ledger's capacity until stopped."""

    def __init__(self, queue: Queue, ledger: InFlight, lease_seconds: int, observer: ConsumerObserver) -> None:
        self._queue = queue
        self._ledger = ledger
        self._lease = lease_seconds
        self._observer = observer
        self._period = max(lease_seconds / 4, 0.25)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it ends within a second)."""
        self._stop.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        period = self._period
        next_extension = time.monotonic() + period
        last_count, last_time = self._ledger.settled_total, time.monotonic()
        while not self._stop.wait(min(period, RATE_WINDOW_SECONDS)):
            now = time.monotonic()
            count = self._ledger.settled_total
            self._ledger.adapt((count - last_count) / max(now - last_time, 1e-3), self._lease)
            last_count, last_time = count, now
            if now >= next_extension:
                next_extension = now + period
                self.extend_due()

    def extend_due(self) -> None:
        """Extend the leases that will end within half a lease by the next check."""
        due = self._ledger.expiring(within_seconds=self._lease / 2 + self._period)
        if not due:
            return
        failed = {m.receipt_handle for m in self._queue.change_visibility(due, self._lease)}
        lost = self._ledger.still_held(failed)  # a message deleted meanwhile is no failure
        if lost:
            log.warning("lease extension failed; these may be redelivered", extra={"messages": lost})
        extended = [m for m in due if m.receipt_handle not in failed]
        self._ledger.extended(extended, self._lease)
        self._observer.leases_extended(len(extended))
        log.info("leases extended", extra={"messages": len(extended), "lease_s": self._lease})
