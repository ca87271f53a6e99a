"""Deciding that a drain is over: nothing held, nothing queued, nothing left in the DLQ without a reason.

A receive racing the check holds messages that SQS counts as in flight, so the check cannot
pass while anything is unsettled. Before it passes, messages SQS's redrive policy moved to the
DLQ without a reason (a crash loop exhausted their receive count) are taken back into the
source queue (Queue.take_back_redriven) and the drain goes on until they are processed. While
any dead letter is held invisible (a drain killed mid take-back leaves its listing held for that
lease; an operator's listing too) or delayed, the drain waits: it could be one of them.
"""

from __future__ import annotations

import logging
import time

from etl_service.errors import DependencyDown
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.ports import Queue

log = logging.getLogger(__name__)

DEPTH_CHECK_SECONDS = 0.5


class DrainCheck:
    """Asked by the consumer whenever it is idle; true once the queue is empty and the DLQ clean."""

    def __init__(self, queue: Queue, ledger: InFlight, gate: DependencyGate) -> None:
        self._queue = queue
        self._ledger = ledger
        self._gate = gate
        self._next_check = 0.0
        self.taken_back = 0
        """Messages taken back from the DLQ during this drain."""
        self._waiting_for_held = False

    def drained(self) -> bool:
        """Nothing held; SQS counts no message visible, in flight or delayed; no reasonless dead letter."""
        if self._ledger.held() or self._gate.down or time.monotonic() < self._next_check:
            return False
        self._next_check = time.monotonic() + DEPTH_CHECK_SECONDS
        try:
            if not self._queue.depth().empty or self._dead_letters_held():
                return False
            taken = self._queue.take_back_redriven()
        except DependencyDown:
            return False
        if taken:
            self.taken_back += taken
            log.warning("took back messages the redrive policy had moved to the DLQ", extra={"messages": taken})
            return False
        return True

    def _dead_letters_held(self) -> bool:
        held = self._queue.dead_letters_held()
        if held and not self._waiting_for_held:
            log.warning(
                "dead letters held by another reader or delayed: the drain waits for them", extra={"messages": held}
            )
        self._waiting_for_held = held > 0
        return held > 0
