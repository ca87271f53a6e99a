"""Receivers: threads that long-poll SQS while there is room in the ledger and the gate is open.

Each receiver reserves room for 10 messages before it receives (backpressure), checks the
dependency gate (an outage pauses receiving instead of burning receive counts), and delivers
what it got. Messages a long poll returns after the stop are released at once (visibility 0).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from etl_service.domain.messages import QueueMessage
from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.ports import Queue

log = logging.getLogger(__name__)

SQS_MAX_PER_RECEIVE = 10


class Receivers:
    """`count` receiver threads; `deliver` gets each non-empty receive, `release` late ones."""

    def __init__(
        self,
        queue: Queue,
        ledger: InFlight,
        gate: DependencyGate,
        wait_seconds: int,
        lease_seconds: int,
        deliver: Callable[[list[QueueMessage]], None],
        release: Callable[[list[QueueMessage]], None],
        fail: Callable[[Misconfigured], None],
    ) -> None:
        self._queue = queue
        self._ledger = ledger
        self._gate = gate
        self._wait = wait_seconds
        self._lease = lease_seconds
        self._deliver = deliver
        self._release = release
        self._fail = fail
        self._threads: list[threading.Thread] = []

    def start(self, count: int, stop: threading.Event) -> None:
        """Start the threads; they end once `stop` is set (a long poll in progress finishes first)."""
        self._threads = [
            threading.Thread(target=self._loop, args=(stop,), name=f"receiver-{i}", daemon=True) for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        """Whether any receiver is still running (possibly inside a long poll)."""
        return any(thread.is_alive() for thread in self._threads)

    def _loop(self, stop: threading.Event) -> None:
        ledger, backoff = self._ledger, 0.5
        while not stop.is_set():
            if not ledger.reserve(SQS_MAX_PER_RECEIVE, stop):
                continue
            # The gate is checked after the wait for room: that wait ends when a batch settles,
            # which may be the very batch that found a dependency down.
            try:
                if not self._gate.wait_open(stop):
                    ledger.cancel(SQS_MAX_PER_RECEIVE)
                    continue
            except Misconfigured as error:  # the gate's probe met a refused identity (review 20, R20-7)
                ledger.cancel(SQS_MAX_PER_RECEIVE)
                self._fail(error)
                return
            try:
                messages = self._queue.receive(SQS_MAX_PER_RECEIVE, self._wait)
            except DependencyDown as error:
                ledger.cancel(SQS_MAX_PER_RECEIVE)
                log.warning("receive failed; retrying in %.1f s: %s", backoff, error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 20.0)
                continue
            except Misconfigured as error:
                ledger.cancel(SQS_MAX_PER_RECEIVE)
                self._fail(error)
                return
            except Exception as error:  # a bug in receiving: log it, back off, keep the other receivers going
                ledger.cancel(SQS_MAX_PER_RECEIVE)
                log.error("receive failed unexpectedly: %s", type(error).__name__)
                stop.wait(backoff)
                backoff = min(backoff * 2, 20.0)
                continue
            backoff = 0.5
            ledger.admit(SQS_MAX_PER_RECEIVE, messages, self._lease)
            if messages and stop.is_set():
                self._release(messages)
                return
            if messages:
                self._deliver(messages)
