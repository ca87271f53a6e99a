"""The DLQ: list dead letters with their reasons, re-send one, take back what the ETL did not write.

Operators use it through `python -m etl_service dead-letters` (each command runs `check` first:
are the two queues a source and its own DLQ?); a drain takes back what SQS's redrive policy
moved (SqsQueue.take_back_redriven) through it too: every message without a reason, and every
one that is not a dead letter of the ETL's by its body, whatever its attributes
(service/own_dead_letters.py). Reading the whole DLQ
means receiving every message: each read takes a short lease, and the messages are released
again when the listing ends (`release`). SQS failures raise the ETL's kinds
(DependencyDown, QueueConfigurationError). What one message reads as: dead_letter.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from etl_service.adapters.crash_loop_letters import (
    MAX_TAKE_BACKS,
    TAKEN_BACK_ATTRIBUTE,
    CrashLoopLetters,
    taken_back_attribute,
)
from etl_service.adapters.dead_letter import DeadLetter, to_dead_letter
from etl_service.adapters.held_letters import HeldLetters
from etl_service.adapters.sqs_common import (
    EVENT_ID_ATTRIBUTE,
    SENT_TIMESTAMP_ATTRIBUTE,
    SQS_ERRORS,
    QueuePair,
    approximate_counts,
    check_queue_pair,
    raise_for,
)
from etl_service.adapters.take_back_times import TakeBackTagger, take_back_times
from etl_service.domain.messages import MAX_EVENT_ID_LENGTH
from etl_service.domain.resent_times import (
    RESENT_FROM_ATTRIBUTE,
    SENT_TIME_TAG_ATTRIBUTE,
    ResentTime,
    tag_input,
)
from etl_service.service.own_dead_letters import CiphertextProver, own_dead_letters
from etl_service.service.ports import TakeBack

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

Tagger = Callable[[bytes], str]
"""The operator's Transit HMAC of a re-sent letter's tag input (resent_time_tags.tag_resent_time)."""

LISTING_LEASE_SECONDS = 60
"""How long a listing holds the dead letters it read (until release(); a killed reader's for all of it)."""
LISTING_WAIT_SECONDS = 1
"""Each receive of a listing long-polls: SQS's short poll (0) samples a subset of its servers and can
answer empty while letters exist, so a listing - a drain's take-back above all - would end early."""
LISTING_LEASE_MARGIN_SECONDS = 10
"""A listing stops receiving this long before its first letters' lease runs out: past it they could be
visible again and be listed twice (and a take-back resend one twice)."""
LISTING_LIMIT = 10_000
"""The most dead letters one listing reads (a drain's take-back, `dead-letters redrive`)."""


class DeadLetterError(RuntimeError):
    """An operator command could not complete; the message says why."""


def _resend_attributes(
    dead: DeadLetter,
    body: str,
    tag: Tagger | None = None,
    taken_back: bool = False,
    take_back_time: ResentTime | None = None,
) -> dict[str, Any]:
    """The event id, and the original sent time with a tag vouching for it when there is one.

    With `tag` (the operator's Transit HMAC: `resend` of a letter the ETL sealed) a new tag over
    this dead letter, its event id, its original time and `body` (domain/resent_times.py); without,
    the time and tag the letter carries when `body` is its own (a take-back, a CLEAR letter
    re-sent as it was), else `take_back_time` (the ETL's tag of SQS's SentTimestamp of the DLQ
    copy: take_back_times), else no time: the copy is then dated by SQS (the ETL believes no
    untagged time). A take-back (`taken_back`) counts itself on the copy (crash_loop_letters).
    """
    attributes: dict[str, Any] = {EVENT_ID_ATTRIBUTE: {"DataType": "String", "StringValue": dead.event_id}}
    if taken_back:
        attributes[TAKEN_BACK_ATTRIBUTE] = taken_back_attribute(dead.taken_back + 1)
    vouched = (dead.carried_time if body == dead.raw_body else None) or take_back_time
    if tag is not None and dead.sent_at != "unknown" and len(dead.event_id) <= MAX_EVENT_ID_LENGTH:  # R22-9
        data = tag_input(dead.message_id, dead.event_id, dead.sent_timestamp_ms, body)
        vouched = ResentTime(dead.sent_timestamp_ms, dead.message_id, tag(data))
    if vouched is not None:
        attributes[SENT_TIMESTAMP_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(vouched.sent_ms)}
        attributes[SENT_TIME_TAG_ATTRIBUTE] = {"DataType": "String", "StringValue": vouched.tag}
        attributes[RESENT_FROM_ATTRIBUTE] = {"DataType": "String", "StringValue": vouched.resent_from}
    return attributes


class DeadLetterQueue:
    """Operator access to the DLQ of one source queue."""

    def __init__(
        self, client: SQSClient, queue_url: str, dlq_url: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._clock = clock
        self._held = HeldLetters()
        self.cut_short: str | None = None
        """Why the last `list` stopped before reading the whole DLQ (None: it read it whole)."""

    def check(self) -> QueuePair:
        """Prove the DLQ is the source queue's own dead-letter queue before anything is read or sent.

        sqs_common.check_queue_pair (QueuePairRefused otherwise): with the source as the "DLQ",
        `resend` and `redrive` would send bodies in clear into it; with a queue that is not the
        source's redrive target, `resend` would feed the wrong queue and `erase` would check
        nothing and report done; a DLQ redriving elsewhere would lose letters to each `list`.
        """
        return check_queue_pair(self._client, self._queue_url, self._dlq_url)

    def list(self, limit: int = LISTING_LIMIT) -> list[DeadLetter]:
        """Up to `limit` dead letters (each held for LISTING_LEASE_SECONDS until release()).

        Receives until one answers empty; long polling (LISTING_WAIT_SECONDS) makes that answer
        cover all of SQS's servers, at the cost of waiting that long for it. Sets `cut_short`
        when it stopped before that: `limit` letters read (perhaps all there were), its lease
        nearly out (LISTING_LEASE_MARGIN_SECONDS) or out, or a letter listed twice (its lease
        ran out). A letter listed twice is returned once, with its newer receipt handle.
        """
        found: dict[str, DeadLetter] = {}
        self.cut_short = None
        started = self._clock()
        while not self.cut_short:
            if len(found) >= limit:
                self.cut_short = f"it read its limit of {limit} letters"
                break
            if self._clock() - started >= LISTING_LEASE_SECONDS - LISTING_LEASE_MARGIN_SECONDS:
                self.cut_short = f"its {LISTING_LEASE_SECONDS} s lease was running out"
                break
            try:
                batch = self._client.receive_message(
                    QueueUrl=self._dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=LISTING_WAIT_SECONDS,
                    VisibilityTimeout=LISTING_LEASE_SECONDS,
                    MessageSystemAttributeNames=["SentTimestamp"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except SQS_ERRORS as error:
                raise_for(error, "receive from DLQ")
            if not batch:
                break
            letters = [to_dead_letter(m) for m in batch]
            self._held.add(letters)  # a letter listed again: released under its newer receipt handle too
            if any(d.message_id in found for d in letters):
                self.cut_short = "a letter came back while it listed (its lease ran out)"
            found.update((d.message_id, d) for d in letters)
        if not self.cut_short and self._clock() - started >= LISTING_LEASE_SECONDS:
            self.cut_short = f"it took longer than its {LISTING_LEASE_SECONDS} s lease"
        if self.cut_short:
            log.warning("the DLQ listing was cut short: %s", self.cut_short, extra={"messages": len(found)})
        return list(found.values())

    def release(self) -> None:
        """Make the dead letters listed visible again."""
        held = self._held.release_all()
        for start in range(0, len(held), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": d.receipt_handle, "VisibilityTimeout": 0}
                for i, d in enumerate(held[start : start + 10])
            ]
            try:
                self._client.change_message_visibility_batch(QueueUrl=self._dlq_url, Entries=entries)  # type: ignore[arg-type]
            except SQS_ERRORS as error:
                log.warning("releasing dead letters failed (their lease runs out instead): %s", type(error).__name__)

    def resend(
        self,
        dead: DeadLetter,
        body: str,
        tag: Tagger | None = None,
        taken_back: bool = False,
        take_back_time: ResentTime | None = None,
    ) -> str:
        """Send `body` to the source queue under the dead letter's event id and sent time; delete the dead letter.

        Returns the new message id. The event id keeps the load idempotent: re-sending twice
        loads one row. The sent time counts only with a tag (`_resend_attributes`): `tag` makes
        one (the operator's Transit HMAC), else the one the letter carries with this body goes along.
        `taken_back`: sent by a take-back, which counts itself on the copy (crash_loop_letters), and
        `take_back_time` the time and tag it vouches for (take_back_times).
        """
        # Before anything is sent: OpenBao may refuse the operator's tag.
        attributes = _resend_attributes(dead, body, tag, taken_back, take_back_time)
        try:
            sent = self._client.send_message(QueueUrl=self._queue_url, MessageBody=body, MessageAttributes=attributes)
            self._client.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=dead.receipt_handle)
        except SQS_ERRORS as error:
            raise_for(error, "re-send from DLQ")
        self._held.forget(dead.message_id)
        return str(sent["MessageId"])

    def take_back_redriven(
        self,
        limit: int = LISTING_LIMIT,
        prover: CiphertextProver | None = None,
        crash_loops: CrashLoopLetters | None = None,
        tagger: TakeBackTagger | None = None,
    ) -> TakeBack:
        """Re-send every DLQ message that is not a dead letter of the ETL's, as it was (moved by SQS's redrive policy).

        Taken back: those without a reason, and those with one whose body is not a dead letter
        the ETL wrote (own_dead_letters): a `reason` attribute is the producer's to set. With a
        `prover` (the drain of a sealing ETL) a sealed envelope is the ETL's only once proven -
        one proof for the listing; without one (`dead-letters redrive`, a discarding ETL) every
        envelope shaped as the ETL writes it stays, a forged one too.

        Each goes back under its event id (resend), so it loads exactly once under the same key or gets
        its reason; with its original sent time: the tag the letter carries, else, with a `tagger`
        (the ETL's take-back key: run mode, a drain; the operator's dead-letter key: `dead-letters
        redrive`), SQS's SentTimestamp of the DLQ copy - the original's, kept by the redrive -
        tagged (take_back_times; review 20, R20-13).
        Without either it loads under the take-back's date. Reads at most `limit`
        messages; returns how many were taken back, and `complete=False` when the listing was cut short
        (`cut_short`): a letter to take back may be left unread. When it took none, `held_elsewhere`
        says how many DLQ messages another reader held (or were delayed) while its listing held the
        rest: unread, perhaps to take back (SQS's approximate counts).
        With `crash_loops` (the ETL's: run mode, a drain), a message the redrive moved again after
        MAX_TAKE_BACKS take-backs is not sent back but sealed and dead-lettered in place as
        `crash_loop` (crash_loop_letters): not counted in `taken`; TakeBack.crash_looped counts them.
        DependencyDown or Misconfigured when SQS, the prover, the tagger or the sealer fails: what was
        not yet sent stays in the DLQ (the tagger is asked once, before anything is sent).
        """
        try:
            letters = self.list(limit)
            reasoned = [d for d in letters if d.reason is not None]
            own = own_dead_letters([d.written_envelope for d in reasoned], prover)  # no body read again
            kept = {d.message_id for d, is_own in zip(reasoned, own, strict=True) if is_own}
            redriven = [d for d in letters if d.message_id not in kept]
            looping = 0
            is_looping = [crash_loops is not None and dead.taken_back >= MAX_TAKE_BACKS for dead in redriven]
            times = take_back_times([d for d, loops in zip(redriven, is_looping, strict=True) if not loops], tagger)
            for dead, loops in zip(redriven, is_looping, strict=True):
                if crash_loops is not None and loops:
                    crash_loops.seal_in_place(dead)
                    self._held.forget(dead.message_id)
                    looping += 1
                else:
                    self.resend(dead, dead.raw_body, taken_back=True, take_back_time=times.get(dead.message_id))
            held_elsewhere = 0 if redriven else self._held_elsewhere()
        finally:
            self.release()
        return TakeBack(len(redriven) - looping, self.cut_short is None, held_elsewhere, crash_looped=looping)

    def _held_elsewhere(self) -> int:
        """DLQ messages in flight but not held by this object's listing, or delayed; ask before release().

        One GetQueueAttributes call. Asked while the listing still holds its letters, so they are
        not counted, however SQS's count lags their release (a count after release could take
        them for another reader's for up to a minute).
        """
        counts = approximate_counts(self._client, self._dlq_url, "get DLQ attributes")
        return max(0, counts.in_flight - len(self._held)) + counts.delayed
