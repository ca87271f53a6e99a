"""Run mode: take back, every few minutes, what SQS's redrive policy moved to the DLQ.

A drain takes such messages back before it ends (service/drain_check.py); `etl_service run` - what
Kubernetes runs - never ended, so nothing took them back until an operator ran `dead-letters
redrive`, and they sat in the DLQ in clear for up to its 14 days (attack 19, finding 2). A thread
of the run now calls the same take-back (Queue.take_back_redriven: every DLQ message without a
reason, or whose body is no dead letter of the ETL's) every `period` seconds while the gate is
open; what it moves goes through the pipeline like any message. Each one taken back is counted
(`taken_back`: the metric `etl_dead_letters_taken_back_total`, alert EtlDeadLettersTakenBack):
it was in the DLQ in clear until then, which the ETL's own dead-lettering should have prevented.
A take-back failing on a dependency is logged and tried at the next period; a misconfiguration
(the DLQ refused) stops the run like any other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.gate import DependencyGate
from etl_service.service.outcomes import ConsumerObserver
from etl_service.service.ports import Queue

log = logging.getLogger(__name__)

DEFAULT_TAKE_BACK_SECONDS = 300.0
"""How often run mode takes back messages SQS's redrive moved to the DLQ (ETL_TAKE_BACK_SECONDS)."""


class PeriodicTakeBack:
    """A thread taking back redriven DLQ messages every `period` seconds until stopped."""

    def __init__(
        self,
        queue: Queue,
        gate: DependencyGate,
        period: float,
        observer: ConsumerObserver,
        fail: Callable[[Misconfigured], None],
    ) -> None:
        self._queue = queue
        self._gate = gate
        self._period = period
        self._observer = observer
        self._fail = fail
        self.taken_back = 0
        self.crash_looped = 0
        """Messages the take-back sealed in place as `crash_loop` (the redrive moved them again after a take-back)."""
        self._thread = threading.Thread(target=self._loop, name="take-back", daemon=True)
        self._stop = threading.Event()

    def start(self, stop: threading.Event) -> None:
        """Start the thread; it ends once `stop` is set."""
        self._stop = stop
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            if self._gate.down is None:
                self.take_back_once()

    def take_back_once(self) -> int:
        """One take-back; how many it moved (0 when it failed). Crash loops it dead-lettered are told too."""
        try:
            took = self._queue.take_back_redriven()
        except DependencyDown as error:
            log.warning("take-back of redriven dead letters failed; trying again later: %s", error)
            return 0
        except Misconfigured as error:
            self._fail(error)
            return 0
        if took.crash_looped:
            self.crash_looped += took.crash_looped
            self._observer.crash_looped(took.crash_looped)
        taken = took.taken
        if taken:
            log.warning("dead letters the redrive policy moved were taken back", extra={"messages": taken})
            self.taken_back += taken
            self._observer.taken_back(taken)
        return taken
