"""Deciding that a drain is over: nothing held, nothing queued, nothing left in the DLQ to take back.

A receive racing the check holds messages that SQS counts as in flight, so the check cannot
pass while anything is unsettled. Before it passes, messages SQS's redrive policy moved to the
DLQ (a crash loop exhausted their receive count) are taken back into the source queue
(Queue.take_back_redriven: every message without a reason, or whose body is no dead letter of
the ETL's, whatever its attributes) and the drain goes on until they are processed. While any
dead letter is held invisible (a drain killed mid take-back leaves its listing held for that
lease; an operator's listing too) or delayed, the drain waits: it could be one of them. Held
letters are counted before the take-back and, when it took none, once more while its listing
held the rest: a reader that picked a letter up between the first count and the listing hid it
from the listing (attack 12, finding 6).

Exit 0 cannot be stronger than SQS's counts, which are approximate: a letter another reader
received a moment before the second count may not be counted in flight yet, and the drain then
passes without it. Nothing is lost: it stays in the DLQ for the next drain or
`dead-letters redrive`.

That wait is bounded (`held_wait_seconds`; by default the take-back listing's lease, which the
Queue port gives as `dead_letter_listing_lease_seconds`, plus HELD_WAIT_MARGIN_SECONDS, so a
killed drain's listing always comes back within it). A reader holding letters longer -
`dead-letters erase` holds its sweep for `--wait` + 600 s, a killed erase run for as long -
would otherwise keep every drain waiting for hours. Past the bound the check passes anyway and
`held_unread` says how many dead letters were still held unread: the drain reports it and exits
non-zero. Nothing is lost: they stay in the DLQ, and the next drain or `dead-letters redrive`
takes back any without a reason.

A take-back whose listing was cut short (TakeBack.complete False: the DLQ holds more letters than
one listing reads, or the listing outlasted its lease) may have left a reasonless letter unread,
so it counts like held letters: the drain goes on checking for up to the same bound, then the
check passes with `dlq_unread` set, and the drain says the DLQ could not be read whole and exits
non-zero. Nothing is lost there either.

A check that fails on a dependency (DependencyDown: SQS, or OpenBao proving the DLQ's sealed
letters) does not pass: the drain checks again DEPTH_CHECK_SECONDS later, for as long as it
fails. It is never silent (attack 14, finding 2: a take-back failing on every check left the drain
running for ever without a word): the first failure is logged as a warning naming the step and
the dependency, and so is every FAILURE_LOG_SECONDS it goes on. `check_failures` counts them,
and each is told to the observer (`drain_check_failed`): the metric
`etl_drain_check_failures_total{dependency}` (entrypoints/metrics.py), which a drain scraped as it
runs shows growing while the drain cannot end (review 15, finding 11: it was a log field only).
"""

from __future__ import annotations

import logging
import time

from etl_service.errors import DependencyDown
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.outcomes import ConsumerObserver, NoObserver
from etl_service.service.ports import Queue

log = logging.getLogger(__name__)

DEPTH_CHECK_SECONDS = 0.5
FAILURE_LOG_SECONDS = 30.0
"""While the drain check keeps failing on a dependency, how often it says so again."""
HELD_WAIT_MARGIN_SECONDS = 30.0
"""How much longer than the take-back listing's lease a drain waits for held dead letters by default."""


def default_held_wait_seconds(listing_lease_seconds: float) -> float:
    """How long a drain waits for held dead letters by default: a killed take-back's listing is back well within it."""
    return listing_lease_seconds + HELD_WAIT_MARGIN_SECONDS


class WaitSinceFirstSeen:
    """A bounded wait for something to pass, timed from the first time it was seen.

    Call `still_waiting()` each time the thing is seen: True until `seconds` have passed since the
    first of those calls, then False, and `over` turns true. `clear()` when it is gone: the next
    sighting starts a new wait. The start of a wait is logged (`started`), and its end past the
    bound once (`gave_up`), as warnings with `extra` (the seconds waited for added to the first).
    """

    def __init__(self, seconds: float, started: str, gave_up: str) -> None:
        self.seconds = seconds
        self._started = started
        self._gave_up = gave_up
        self._since: float | None = None
        self.over = False
        """True once a wait outlasted `seconds`, until `clear()`."""

    def clear(self) -> None:
        """What was waited for is gone: no wait, none over."""
        self._since, self.over = None, False

    def still_waiting(self, extra: dict[str, object] | None = None) -> bool:
        """Seen again: True while within `seconds` of the first sighting since the last clear()."""
        extra = extra or {}
        now = time.monotonic()
        if self._since is None:
            self._since = now
            log.warning(self._started, extra={**extra, "seconds": self.seconds})
        if now - self._since <= self.seconds:
            return True
        if not self.over:
            log.warning(self._gave_up, extra=extra)
        self.over = True
        return False


class DrainCheck:
    """Asked by the consumer whenever it is idle; true once the queue is empty and the DLQ clean."""

    def __init__(
        self,
        queue: Queue,
        ledger: InFlight,
        gate: DependencyGate,
        held_wait_seconds: float | None = None,
        observer: ConsumerObserver | None = None,
    ) -> None:
        """`held_wait_seconds` None: default_held_wait_seconds of the queue's DLQ listing lease.

        `observer` is told of each check that fails on a dependency (the metrics count them).
        """
        self._queue = queue
        self._ledger = ledger
        self._gate = gate
        self._observer = observer or NoObserver()
        if held_wait_seconds is None:
            held_wait_seconds = default_held_wait_seconds(queue.dead_letter_listing_lease_seconds)
        self.held_wait_seconds = held_wait_seconds
        """How long the check waits for held dead letters, or for a DLQ it cannot read whole."""
        self._next_check = 0.0
        self.check_failures = 0
        """Checks of this drain that failed on a dependency (DependencyDown), each retried and told to the observer."""
        self._failing_since: float | None = None
        self._next_failure_log = 0.0
        self.taken_back = 0
        self.crash_looped = 0
        """Messages the take-back sealed in place as `crash_loop` (the redrive moved them again after a take-back)."""
        """Messages taken back from the DLQ during this drain."""
        self.held_unread = 0
        """Dead letters still held by another reader or delayed when the check passed without them
        (waited for longer than `held_wait_seconds`); 0 when none were."""
        self._held_wait = WaitSinceFirstSeen(
            held_wait_seconds,
            "dead letters held by another reader or delayed: the drain waits for them",
            "dead letters still held after the drain's wait: it ends without reading them (they stay in the DLQ)",
        )
        self._unread_wait = WaitSinceFirstSeen(
            held_wait_seconds,
            "the take-back could not read the whole DLQ: the drain goes on trying",
            "the DLQ still could not be read whole after the drain's wait: the drain ends (nothing lost)",
        )

    @property
    def dlq_unread(self) -> bool:
        """Whether the check passed while take-backs still could not read the whole DLQ.

        Past `held_wait_seconds` of trying: a reasonless letter may be in it, unread.
        """
        return self._unread_wait.over

    def drained(self) -> bool:
        """Nothing held; SQS counts no message visible, in flight or delayed; nothing to take back from the DLQ.

        Dead letters held or delayed in the DLQ - counted before the take-back, and again by a
        take-back that took none, while its listing held the rest - keep it false for up to
        `held_wait_seconds`, then no longer (`held_unread` counts them); so does a take-back that
        could not read the whole DLQ (`dlq_unread`).
        """
        if self._ledger.held() or self._gate.down or time.monotonic() < self._next_check:
            return False
        self._next_check = time.monotonic() + DEPTH_CHECK_SECONDS
        step = "counting the queue's messages and the DLQ's held letters"
        try:
            if not self._queue.depth().empty or self._waits_for_held(self._queue.dead_letters_held()):
                self._check_succeeded()
                return False
            step = "taking back the DLQ's letters that are not the ETL's"
            took = self._queue.take_back_redriven()
        except DependencyDown as error:
            self._check_failed(step, error)
            return False
        self._check_succeeded()
        taken, complete, held_elsewhere = took.taken, took.complete, took.held_elsewhere
        if took.crash_looped:
            self.crash_looped += took.crash_looped
            self._observer.crash_looped(took.crash_looped)
        if taken:
            self.taken_back += taken
            log.warning("took back messages the redrive policy had moved to the DLQ", extra={"messages": taken})
        if complete:
            self._unread_wait.clear()
        if taken:
            return False
        # Held letters counted once more, while the take-back's listing held the rest: a reader that
        # picked one up after the first count hid it from the listing (attack 12, finding 6).
        if self._waits_for_held(held_elsewhere):
            return False
        return complete or not self._unread_wait.still_waiting()

    def _check_failed(self, step: str, error: DependencyDown) -> None:
        """Count a check that failed on a dependency; say so at once, then every FAILURE_LOG_SECONDS.

        Counted here (`check_failures`) and told to the observer (the metric). The error's text is
        the ETL's own (a dependency and an exception type), never a value.
        """
        self.check_failures += 1
        self._observer.drain_check_failed(error.dependency)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now < self._next_failure_log:
            return
        self._next_failure_log = now + FAILURE_LOG_SECONDS
        log.warning(
            "drain check failed while %s: %s; the drain does not end, and checks again",
            step,
            error,
            extra={
                "dependency": error.dependency,
                "failures": self.check_failures,
                "failing_seconds": round(now - self._failing_since, 1),
            },
        )

    def _check_succeeded(self) -> None:
        """A check reached its dependencies: a later failure is said at once again."""
        if self._failing_since is not None:
            log.info("drain check works again", extra={"failures": self.check_failures})
        self._failing_since, self._next_failure_log = None, 0.0

    def _waits_for_held(self, held: int) -> bool:
        """True while `held` dead letters are held or delayed, for up to `held_wait_seconds` from the first seen."""
        if not held:
            self._held_wait.clear()
            self.held_unread = 0
            return False
        if self._held_wait.still_waiting({"messages": held}):
            return True
        self.held_unread = held
        return False
