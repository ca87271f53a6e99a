"""Deciding that a drain is over: nothing held, nothing queued, nothing left in the DLQ without a reason.

A receive racing the check holds messages that SQS counts as in flight, so the check cannot
pass while anything is unsettled. Before it passes, messages SQS's redrive policy moved to the
DLQ without a reason (a crash loop exhausted their receive count) are taken back into the
source queue (Queue.take_back_redriven) and the drain goes on until they are processed. While
any dead letter is held invisible (a drain killed mid take-back leaves its listing held for that
lease; an operator's listing too) or delayed, the drain waits: it could be one of them.

That wait is bounded (`held_wait_seconds`, HELD_WAIT_SECONDS by default: the take-back listing's
lease plus a margin, so a killed drain's listing always comes back within it). A reader holding
letters longer - `dead-letters erase` holds its sweep for `--wait` + 600 s, a killed erase run for
as long - would otherwise keep every drain waiting for hours. Past the bound the check passes
anyway and `held_unread` says how many dead letters were still held unread: the drain reports it
and exits non-zero. Nothing is lost: they stay in the DLQ, and the next drain or `dead-letters
redrive` takes back any without a reason.

A take-back whose listing was cut short (TakeBack.complete False: the DLQ holds more letters than
one listing reads, or the listing outlasted its lease) may have left a reasonless letter unread,
so it counts like held letters: the drain goes on checking for up to the same bound, then the
check passes with `dlq_unread` set, and the drain says the DLQ could not be read whole and exits
non-zero. Nothing is lost there either.
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
TAKE_BACK_LEASE_SECONDS = 60
"""The lease of a take-back's DLQ listing (adapters/dead_letter_queue.py, DeadLetterQueue.list)."""
HELD_WAIT_SECONDS = TAKE_BACK_LEASE_SECONDS + 30.0
"""How long a drain waits for held dead letters: a killed take-back's listing is back well within it."""


class DrainCheck:
    """Asked by the consumer whenever it is idle; true once the queue is empty and the DLQ clean."""

    def __init__(
        self, queue: Queue, ledger: InFlight, gate: DependencyGate, held_wait_seconds: float = HELD_WAIT_SECONDS
    ) -> None:
        self._queue = queue
        self._ledger = ledger
        self._gate = gate
        self._held_wait_seconds = held_wait_seconds
        self._next_check = 0.0
        self.taken_back = 0
        """Messages taken back from the DLQ during this drain."""
        self.held_unread = 0
        """Dead letters still held by another reader or delayed when the check passed without them
        (waited for longer than `held_wait_seconds`); 0 when none were."""
        self.dlq_unread = False
        """True when the check passed (past `held_wait_seconds`) while take-backs still could not
        read the whole DLQ: a reasonless letter may be in it, unread."""
        self._held_since: float | None = None
        self._unread_since: float | None = None

    def drained(self) -> bool:
        """Nothing held; SQS counts no message visible, in flight or delayed; no reasonless dead letter.

        Dead letters held or delayed in the DLQ keep it false for up to `held_wait_seconds`, then
        no longer (`held_unread` counts them); so does a take-back that could not read the whole DLQ
        (`dlq_unread`).
        """
        if self._ledger.held() or self._gate.down or time.monotonic() < self._next_check:
            return False
        self._next_check = time.monotonic() + DEPTH_CHECK_SECONDS
        try:
            if not self._queue.depth().empty or self._waits_for_held():
                return False
            taken, complete = self._queue.take_back_redriven()
        except DependencyDown:
            return False
        if taken:
            self.taken_back += taken
            log.warning("took back messages the redrive policy had moved to the DLQ", extra={"messages": taken})
        if complete:
            self._unread_since, self.dlq_unread = None, False
        return not taken and not self._waits_for_unread(complete)

    def _waits_for_unread(self, complete: bool) -> bool:
        """True while take-backs cannot read the whole DLQ, for up to `held_wait_seconds` from the first."""
        if complete:
            return False
        now = time.monotonic()
        if self._unread_since is None:
            self._unread_since = now
            log.warning(
                "the take-back could not read the whole DLQ: the drain goes on trying",
                extra={"seconds": self._held_wait_seconds},
            )
        if now - self._unread_since <= self._held_wait_seconds:
            return True
        if not self.dlq_unread:
            log.warning("the DLQ still could not be read whole after the drain's wait: the drain ends (nothing lost)")
        self.dlq_unread = True
        return False

    def _waits_for_held(self) -> bool:
        """True while dead letters are held or delayed, for up to `held_wait_seconds` from the first seen."""
        held = self._queue.dead_letters_held()
        now = time.monotonic()
        if not held:
            self._held_since, self.held_unread = None, 0
            return False
        if self._held_since is None:
            self._held_since = now
            log.warning(
                "dead letters held by another reader or delayed: the drain waits for them",
                extra={"messages": held, "seconds": self._held_wait_seconds},
            )
        if now - self._held_since <= self._held_wait_seconds:
            return True
        if not self.held_unread:
            log.warning(
                "dead letters still held after the drain's wait: it ends without reading them (they stay in the DLQ)",
                extra={"messages": held},
            )
        self.held_unread = held
        return False
