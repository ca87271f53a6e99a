"""What the consumer reports: per-batch outcomes, run totals, and the observer that sees them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from etl_service.errors import Misconfigured

PROCESSING_FAILED = "processing_failed"
"""The reason of a message the ETL quarantined itself because processing it failed on every receive."""
DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
"""The reason of a message the ETL dead-lettered itself because its batch failed for a dependency (an
outage, the vault's quota) on its last receive before the redrive limit: sealed, never left to SQS's
redrive in clear; `dead-letters resend` sends it again once the dependency answers."""
TOKENIZE_OUTCOME_UNKNOWN = "tokenize outcome unknown"
"""How the reason detail of a `dependency_unavailable` letter begins when its Tokenize call's outcome is unknown
(its answer lost, retried in vain: service/batch.py `_tokenize`; attack 41, A41-4): the vault may hold its ip and
device id under tokens no record names. `dead-letters erase` tells the operator and the officer so."""

RELEASED_ON_LAST_RECEIVE = "released_on_last_receive"
"""The reason of a message the ETL dead-lettered itself, sealed, instead of releasing it on its last receive
(a stop, a misconfiguration): released, SQS's next receive would move it to the DLQ in clear (review 20,
R20-10). No quarantine row (the database may be what stopped the ETL); `dead-letters resend` sends it again."""
CRASH_LOOP = "crash_loop"
"""The reason of a message SQS's redrive moved to the DLQ again after a take-back sent it back: it may crash
the ETL, so the take-back seals it and dead-letters it in place instead (adapters/crash_loop_letters.py;
review 20, R20-12). No quarantine row; the operator decides (`dead-letters show`, `resend`)."""
UNLOADED_REASONS = (PROCESSING_FAILED, DEPENDENCY_UNAVAILABLE, RELEASED_ON_LAST_RECEIVE, CRASH_LOOP)
"""The reasons of good events the ETL dead-lettered itself without loading them."""


@dataclass
class MessageCounts:
    """How many messages went where; batch outcomes and run totals both count these."""

    received: int = 0
    loaded: int = 0
    already_loaded: int = 0
    quarantined: int = 0
    retried: int = 0
    released: int = 0
    delete_failures: int = 0
    returned_to_dlq: int = 0
    """The ETL's own dead letters moved back to the source queue (a DLQ redrive) and sent back unchanged."""
    reasons: Counter[str] = field(default_factory=Counter)
    errored: set[str] = field(default_factory=set)
    """Ids of messages an error (a dependency down, a bug) left in the queue for a later receive;
    removed once a later batch settles them."""

    def add(self, other: MessageCounts) -> None:
        """Add another count to this one."""
        self.received += other.received
        self.loaded += other.loaded
        self.already_loaded += other.already_loaded
        self.quarantined += other.quarantined
        self.retried += other.retried
        self.released += other.released
        self.delete_failures += other.delete_failures
        self.returned_to_dlq += other.returned_to_dlq
        self.reasons.update(other.reasons)
        self.errored |= other.errored


@dataclass
class BatchOutcome(MessageCounts):
    """What happened to one batch."""

    failed_dependency: str | None = None
    """Set when a dependency outage postponed the whole batch ("vault", "database", ...)."""
    retry_after: float = 0.0
    """Seconds the vault asked the ETL to wait (a metered refusal, `Throttled`); 0 for other failures."""
    fatal: Misconfigured | None = None
    """Set when a misconfiguration (refused identity, missing privilege...) released the batch."""
    delete_refused: Misconfigured | None = None
    """SQS's refusal of the batch's delete, raised after its letters were sent (settle_step): a handler of it
    must not send them again (review 49, R49-3), only stop the ETL."""
    seconds: float = 0.0
    """Wall time spent processing the batch."""
    ages_seconds: list[float] = field(default_factory=list)
    """For each message settled, seconds between its SentTimestamp and the end of processing."""


@dataclass
class RunSummary(MessageCounts):
    """Totals over a run."""

    batches: int = 0
    released_at_stop: int = 0
    taken_back_from_dlq: int = 0
    crash_looped: int = 0
    """Messages the redrive moved again after a take-back, sealed in the DLQ as `crash_loop` instead of fed back."""
    dead_letters_held_unread: int = 0
    """Drain only: DLQ letters another reader still held (or delayed) when the drain stopped waiting for
    them; unread, so one may be reasonless. They stay in the DLQ for the next drain or `dead-letters redrive`."""
    dlq_unread: bool = False
    """Drain only: take-backs still could not read the whole DLQ (more letters than one listing reads,
    or a listing outlasted its lease) when the drain stopped trying; a reasonless letter may be left in it."""
    seconds: float = 0.0

    @property
    def unprocessed_after_errors(self) -> int:
        """Messages an error kept from loading: still in the queue, or dead-lettered by the ETL itself.

        Those dead-lettered were refused for one of UNLOADED_REASONS.
        """
        return len(self.errored) + sum(self.reasons[reason] for reason in UNLOADED_REASONS)

    def add(self, other: MessageCounts) -> None:
        """Fold one batch into the totals."""
        super().add(other)
        self.batches += 1


class ConsumerObserver(Protocol):
    """Told what the consumer does; metrics and the progress display implement it."""

    def batch_done(self, batch: BatchOutcome, totals: RunSummary) -> None:
        """A batch finished (loaded, quarantined or postponed)."""
        ...

    def leases_extended(self, count: int) -> None:
        """The heartbeat extended the visibility of `count` messages."""
        ...

    def dependency_changed(self, dependency: str, up: bool) -> None:
        """A dependency went down (receiving paused) or came back (receiving resumed)."""
        ...

    def held_messages(self, count: int) -> None:
        """How many messages the consumer holds right now."""
        ...

    def drain_check_failed(self, dependency: str) -> None:
        """A drain check failed on `dependency` (DependencyDown: sqs, openbao): the drain checks again."""
        ...

    def taken_back(self, count: int) -> None:
        """Run mode's periodic take-back moved `count` redriven messages from the DLQ back to the source."""
        ...

    def crash_looped(self, count: int) -> None:
        """A take-back (run mode's or a drain's) dead-lettered `count` messages in place as CRASH_LOOP."""
        ...


class NoObserver:
    """Observes nothing."""

    def batch_done(self, batch: BatchOutcome, totals: RunSummary) -> None:
        """Ignore."""

    def leases_extended(self, count: int) -> None:
        """Ignore."""

    def dependency_changed(self, dependency: str, up: bool) -> None:
        """Ignore."""

    def held_messages(self, count: int) -> None:
        """Ignore."""

    def drain_check_failed(self, dependency: str) -> None:
        """Ignore."""

    def taken_back(self, count: int) -> None:
        """Ignore."""

    def crash_looped(self, count: int) -> None:
        """Ignore."""


class FanOut:
    """Passes every observation on to several observers."""

    def __init__(self, *observers: ConsumerObserver) -> None:
        self._observers = observers

    def batch_done(self, batch: BatchOutcome, totals: RunSummary) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.batch_done(batch, totals)

    def leases_extended(self, count: int) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.leases_extended(count)

    def dependency_changed(self, dependency: str, up: bool) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.dependency_changed(dependency, up)

    def held_messages(self, count: int) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.held_messages(count)

    def drain_check_failed(self, dependency: str) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.drain_check_failed(dependency)

    def taken_back(self, count: int) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.taken_back(count)

    def crash_looped(self, count: int) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.crash_looped(count)
