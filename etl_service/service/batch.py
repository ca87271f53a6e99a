"""Processing one batch of messages: validate, tokenize, load, dead-letter, delete.

Order matters for "lose nothing, duplicate nothing":
1. validate each message on its own;
2. set aside the events user_logins holds already, before the vault sees them (attack 34, E1):
   a replay is counted `already_loaded`, a different event under a loaded event_id is refused as
   `event_id_reused` (service/loaded_step.py), and so is an event whose event_id an earlier event
   of the batch holds with other content (attack 38, M4: compared in memory, ip and device id
   included); tokenize the distinct ips and device ids of the others in one vault call, and seal the
   bodies of refused messages (the DLQ keeps no PII in clear); one of the ETL's own dead
   letters moved back from the DLQ, once Transit proved its ciphertext genuine (one call for
   the batch's envelopes, none for a batch of events), goes back as it is, never sealed again
   (service/returned_letters.py);
3. sign the batch's list of row digests with the ETL's own Transit key (one call; attack 41, A41-1: the
   database owner cannot make rows he rewrote verify in `tokenvault erase`), then commit rows, that
   list and quarantine records in one transaction (idempotent on the event key: a
   replay loaded meanwhile by another consumer adds nothing, and a different event under an
   event_id already loaded is refused and quarantined as `event_id_reused` in that transaction);
4. copy rejected messages to the DLQ (every DLQ message has a reason and a quarantine row);
5. only then delete from the source queue.
A crash or outage anywhere before 5 leaves the messages in the queue; redelivery repeats the
steps, and step 2 (or the idempotent load) adds nothing twice. Step 1 is validate_step.py, 2
loaded_step.py and tokenize_step.py,
4 and 5 settle_step.py; this module orders them and handles failures.

Failures are handled by kind (etl_service.errors): a metered refusal is waited out within the
receive by the vault client, the leases kept, for up to 30 s (adapters/vault_client.py: a quota
paces the ETL and spends no receive); a dependency down postpones the batch (a metered refusal past
that wait, `Throttled`, for at least the vault's retry-after), and a message of it on its last receive
before the redrive limit is sealed and dead-lettered as `dependency_unavailable` (attack 19,
finding 2: SQS's redrive moved good events to the DLQ in clear) - one validation refused with its
own reason, each under the id validation left it (review 20, R20-9); a misconfiguration releases it
(visibility 0; one on its last receive is dead-lettered sealed instead, `release`) and reports
`fatal`; a bug isolates each message, and a message still failing on
its last receive is quarantined as `processing_failed`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import cast

from etl_service.domain.messages import (
    EVENT_ID_REUSED,
    QuarantineRecord,
    QueueMessage,
    UserLoginRow,
    event_key,
    quarantine_record,
)
from etl_service.domain.redelivery import MAX_RETRY_DELAY_SECONDS, retry_delay
from etl_service.domain.row_manifest import RowManifest, unsigned_manifest
from etl_service.domain.validation import DEFAULT_DEVICE_TYPES, MAX_BODY_BYTES, Rejection
from etl_service.errors import DependencyDown, EtlError, Misconfigured, Throttled, TokenizeOutcomeUnknown
from etl_service.service.dead_lettering import dead_letter_released, kept_bodies
from etl_service.service.loaded_step import set_aside_loaded
from etl_service.service.outcomes import (
    DEPENDENCY_UNAVAILABLE,
    PROCESSING_FAILED,
    TOKENIZE_OUTCOME_UNKNOWN,
    BatchOutcome,
)
from etl_service.service.ports import BodySealer, LoginStore, Queue, RowSigner, Tokenizer
from etl_service.service.postponed_notice import PostponedNotice
from etl_service.service.returned_letters import ReturnedLetter
from etl_service.service.sealing import DiscardBodies
from etl_service.service.settle_step import dead_letter_and_delete, reused_messages
from etl_service.service.tokenize_step import tokenize_accepted
from etl_service.service.validate_step import Accepted, Rejected, validate_messages, without_own_event_id

log = logging.getLogger(__name__)

TOKENIZE_RETRY_SECONDS = 30.0
"""How long a Tokenize whose outcome is unknown is retried on a last receive, in all (BatchProcessor._tokenize)."""
TOKENIZE_RETRY_PAUSE_SECONDS = 1.0
"""The pause between two health checks of the vault while such a retry waits for it."""
TOKENIZE_RETRY_ATTEMPTS = 2
"""The most times such a Tokenize is sent again once the vault answers its health check: a vault that answers its
health but refuses the call again (its database refusing the insert: UNAVAILABLE) is not asked for 30 s."""


class BatchProcessor:
    """Runs the five steps above for one batch."""

    def __init__(
        self,
        queue: Queue,
        tokenizer: Tokenizer,
        store: LoginStore,
        device_types: frozenset[str] = DEFAULT_DEVICE_TYPES,
        max_body_bytes: int = MAX_BODY_BYTES,
        sealer: BodySealer | None = None,
        max_receive_count: int | Callable[[], int | None] | None = None,
        stopping: threading.Event | None = None,
        tokenize_retry_seconds: float | None = None,
        signer: RowSigner | None = None,
    ) -> None:
        """`stopping`: the consumer's stop event (bootstrap shares it); a retried Tokenize stops waiting once set.

        `signer`: signs each batch's list of row digests before the load (attack 41, A41-1); None loads rows
        that name no list (unit tests; an ETL with no OpenBao, ETL_DLQ_BODIES=discard: `tokenvault erase`
        refuses such rows unless the officer confirms their number).
        `max_receive_count`: the source queue's redrive limit, or what reads it when asked (SqsQueue.redrive_limit:
        a redrive policy changed while the ETL runs counts at once).
        """
        self._signer = signer
        self._postponed_notice = PostponedNotice()
        self._queue = queue
        self._tokenizer = tokenizer
        self._store = store
        self._device_types = device_types
        self._max_body_bytes = max_body_bytes
        self._sealer = sealer or DiscardBodies()
        self._redrive_limit: Callable[[], int | None] = (
            max_receive_count if callable(max_receive_count) else lambda: max_receive_count
        )
        """The source queue's redrive limit: a message received this many times is on its last receive."""
        self._stopping = stopping if stopping is not None else threading.Event()
        self.tokenize_retry_seconds = (
            TOKENIZE_RETRY_SECONDS if tokenize_retry_seconds is None else tokenize_retry_seconds
        )
        """How long a Tokenize whose outcome is unknown is retried on a last receive (TOKENIZE_RETRY_SECONDS)."""

    def process(self, messages: Sequence[QueueMessage]) -> BatchOutcome:
        """Process `messages`; nothing raises: outages, refusals and bugs become the outcome."""
        started = time.monotonic()
        outcome = self._process(messages)
        outcome.seconds = time.monotonic() - started
        return outcome

    def release(
        self, messages: Sequence[QueueMessage], why: str, minted: Mapping[str, Sequence[str]] | None = None
    ) -> BatchOutcome:
        """Make messages visible again at once (a stop or a misconfiguration, `why`); what became of them.

        One on its last receive is sealed and dead-lettered instead, as `released_on_last_receive`
        (review 20, R20-10): released, SQS's next receive would move it to the DLQ in clear. No
        quarantine row is written (Postgres may be what stopped the ETL, or hang); only if OpenBao or
        the DLQ fails too is it released, and the redrive takes it. `minted`: the tokens the vault
        returned for them, by message id (a misconfiguration met after tokenizing), recorded in their
        envelopes (attack 35, N9).
        """
        outcome = BatchOutcome()
        last = [m for m in messages if self._on_last_receive(m)]
        kept_back = (
            dead_letter_released(self._queue, self._sealer, last, why, self._max_body_bytes, outcome, minted)
            if last
            else []
        )
        rest = [m for m in messages if not self._on_last_receive(m)] + kept_back if last else messages
        failed = self._queue.change_visibility(rest, 0) if rest else []
        if failed:
            log.warning("release failed (their lease runs out instead)", extra={"messages": len(failed)})
        outcome.released = len(rest)
        return outcome

    def _process(self, messages: Sequence[QueueMessage]) -> BatchOutcome:
        outcome = BatchOutcome(received=len(messages))
        if not messages:
            return outcome
        validated: tuple[Accepted, Rejected] | None = None
        replays: list[QueueMessage] = []  # loaded already (step 2): in neither list of `validated`
        minted: dict[str, tuple[str, ...]] = {}  # tokens the vault returned, by message id (attack 35, N9)
        try:
            accepted, rejected = validate_messages(messages, self._sealer, self._device_types, self._max_body_bytes)
            validated = accepted, rejected
            accepted, replays, reused = set_aside_loaded(self._store, accepted)
            if replays or reused:  # neither goes to the vault (E1); a replay is deleted below
                rejected = [*rejected, *reused]
                validated = accepted, rejected
            rows, rejected = self._tokenize(accepted, list(rejected), minted)
            validated = accepted, rejected  # with the values the vault refused
            manifest = self._sign(rows)  # Transit down or refusing: postponed or released, never loaded unsigned
            self._load_and_settle(messages, rows, rejected, outcome, len(replays), minted, manifest)
        except DependencyDown as error:
            # Class and counts only, never the error's text (a server's words, a value in them: review 47, R47-4);
            # the WARNING "batch postponed" is `_postpone`'s, rate-limited.
            log.debug(
                "batch's dependency down",
                extra={"reason": type(error).__name__, "dependency": error.dependency, "messages": len(messages)},
            )
            if isinstance(error, TokenizeOutcomeUnknown) and error.fatal is not None:  # the vault refuses the ETL
                log.error("batch's vault call refused: %s", error.fatal, extra={"messages": len(messages)})
                outcome.fatal = error.fatal
            outcome.failed_dependency = error.dependency
            outcome.retry_after = error.retry_after if isinstance(error, Throttled | TokenizeOutcomeUnknown) else 0.0
            last = [m for m in messages if self._on_last_receive(m)]
            rest = [m for m in messages if not self._on_last_receive(m)] if last else messages
            if rest:
                self._postpone(rest, outcome, outcome.retry_after, type(error).__name__, error.dependency)
            if last:
                self._dead_letter_unavailable(last, validated, error, outcome, replays, minted)
        except Misconfigured as error:
            log.error("batch released: %s", error, extra={"messages": len(messages)})
            outcome.fatal = error
            outcome.add(self.release(messages, f"a misconfiguration of {error.dependency} stopped the ETL", minted))
        except Exception as error:  # a bug must not lose the batch or block the others
            log.error(
                "batch failed unexpectedly: %s",
                type(error).__name__,
                extra={"message_ids": [m.message_id for m in messages]},
            )
            if len(messages) > 1:
                return self._one_by_one(messages)
            self._last_resort(messages[0], error, outcome, minted)
        return outcome

    def _tokenize(
        self, accepted: Accepted, rejected: Rejected, minted: dict[str, tuple[str, ...]]
    ) -> tuple[list[UserLoginRow], Rejected]:
        """Step 2; a Tokenize whose outcome is unknown is retried when a message of it is on its last receive.

        A vault call that ends DEADLINE_EXCEEDED, UNAVAILABLE or in a reset may have been committed, its
        answer lost on the way back (attack 41, A41-4): the vault then holds the batch's values under tokens
        the ETL never got. Postponed, nothing is lost (the next receive's Tokenize returns the same tokens);
        dead-lettered on a last receive, the letter would record no tokens (N9's `minted_tokens`) and no
        erasure step would reach them. So on a last receive the same Tokenize is sent again once the
        vault answers its health check (at most TOKENIZE_RETRY_ATTEMPTS times), waiting for that for up to
        `tokenize_retry_seconds` in all, the leases kept by the lease keeper meanwhile: it is idempotent (the
        same values return the same tokens, metered as values, not new tokens), and what it returns is loaded,
        or recorded in the letters. If it fails too, the error goes up as TokenizeOutcomeUnknown: its letters say
        so (`_dead_letter_unavailable`) - whatever the retry ended in: a refusal (metered, or of the ETL: then
        the ETL stops too), INTERNAL/UNKNOWN, a bug; the first call's outcome stays unknown.

        Unless the vault said of each Tokenize of this receive that it stored nothing (its
        `tokenvault-nothing-stored` trailer: its database refused before any COMMIT, EtlError.nothing_stored):
        then no answer was lost, and the failure is dealt with as any other (a plain `dependency_unavailable`
        letter, which `dead-letters erase` deletes). A metered refusal (Throttled) is an answer, not retried;
        on a last receive one the vault does not say stored nothing (a call that stored one type's new values
        before the other's were refused) is an unknown outcome as well.
        """
        try:
            return tokenize_accepted(self._tokenizer, accepted, list(rejected), minted)
        except Throttled as error:
            if not error.nothing_stored and any(self._on_last_receive(m) for m, _ in accepted):
                unknown = TokenizeOutcomeUnknown(f"refused, values perhaps stored: {error}", None, error.retry_after)
                raise unknown from None
            raise
        except DependencyDown as error:
            if error.dependency != "vault" or not any(self._on_last_receive(m) for m, _ in accepted):
                raise
            first = error
        log.warning(
            "Tokenize failed on a last receive: trying the same call again",
            extra={"messages": len(accepted), "error": str(first), "nothing_stored": first.nothing_stored},
        )
        nothing_stored = first.nothing_stored  # every Tokenize of this receive said so
        deadline, attempts = time.monotonic() + self.tokenize_retry_seconds, 0
        while not self._stopping.is_set() and time.monotonic() < deadline and attempts < TOKENIZE_RETRY_ATTEMPTS:
            sent = False
            try:
                self._tokenizer.ready()  # the vault answers again: the same call
                attempts, sent = attempts + 1, True
                return tokenize_accepted(self._tokenizer, accepted, list(rejected), minted)
            except Exception as error:
                if sent:
                    nothing_stored = nothing_stored and isinstance(error, EtlError) and error.nothing_stored
                again = isinstance(error, DependencyDown) and not isinstance(error, Throttled)
                if not again and nothing_stored:  # no call of this receive left values behind: as on a first call
                    raise
                if not again:  # the first call's outcome stays unknown, whatever this one ended in
                    said = str(error) if isinstance(error, EtlError) else type(error).__name__
                    fatal = error if isinstance(error, Misconfigured) else None
                    raise TokenizeOutcomeUnknown(f"{first}; retried: {said}", fatal) from None
                first = cast(DependencyDown, error)
            self._stopping.wait(min(TOKENIZE_RETRY_PAUSE_SECONDS, max(deadline - time.monotonic(), 0.0)))
        if nothing_stored:  # the vault refused every call, storing nothing: a dependency down, no more
            raise first
        raise TokenizeOutcomeUnknown(f"{first}; retried {attempts} time(s)") from None

    def _load_and_settle(
        self,
        messages: Sequence[QueueMessage],
        rows: list[UserLoginRow],
        rejected: Rejected,
        outcome: BatchOutcome,
        replays: int = 0,
        minted: Mapping[str, Sequence[str]] | None = None,
        manifest: RowManifest | None = None,
    ) -> None:
        """Steps 3-5; `replays`: messages of the batch found loaded already in step 2 (no row: deleted only).

        `minted`: the tokens the vault returned for the batch's messages, by message id: a rejected one
        among them records its own in its envelope (dead_lettering.kept_bodies).
        """
        bodies = kept_bodies(rejected, self._sealer, minted)
        records = [_quarantine_record(m, r) for m, r in rejected]
        written = self._store.write(rows, records, manifest) if manifest else self._store.write(rows, records)
        outcome.loaded = written.rows_inserted
        outcome.already_loaded = replays + len(rows) - written.rows_inserted - len(written.reused)
        if written.reused:  # committed with their quarantine rows; a failure from here redelivers them
            reused = reused_messages(messages, written.reused)
            bodies += kept_bodies(reused, self._sealer, minted)
            rejected = [*rejected, *reused]
        dead_letter_and_delete(self._queue, messages, rejected, bodies, outcome)
        finished = time.time()
        outcome.ages_seconds = [max(finished - m.sent_timestamp_ms / 1000, 0.0) for m in messages]

    def _sign(self, rows: Sequence[UserLoginRow]) -> RowManifest | None:
        """The batch's signed list of row digests: one Transit `sign` per batch (attack 41, A41-1).

        Each row's (event id, user id, masked ip, masked device id, create date) is hashed and the list signed
        once with the ETL's own key; the load writes it in the rows' transaction, so no row is loaded without
        it. DependencyDown or Misconfigured from the signer pass to `_process`, which postpones or releases the
        batch (a message on its last receive is dead-lettered sealed, with the tokens minted for it).
        """
        if self._signer is None or not rows:
            return None
        manifest_id, digests, message = unsigned_manifest(rows)
        return RowManifest(manifest_id, digests, self._signer.sign_login_rows(message))

    def _one_by_one(self, messages: Sequence[QueueMessage]) -> BatchOutcome:
        """Isolate whatever broke the batch: each message alone, so only the poison one is held back."""
        outcome = BatchOutcome()
        for index, message in enumerate(messages):
            single = self._process([message])
            outcome.add(single)
            outcome.ages_seconds += single.ages_seconds
            outcome.failed_dependency = outcome.failed_dependency or single.failed_dependency
            outcome.retry_after = max(outcome.retry_after, single.retry_after)
            if single.fatal is not None:  # stop here: release the rest untouched
                outcome.fatal = single.fatal
                rest = messages[index + 1 :]
                outcome.add(self.release(rest, f"a misconfiguration of {single.fatal.dependency} stopped the ETL"))
                outcome.received += len(rest)
                break
        return outcome

    def _last_resort(
        self,
        message: QueueMessage,
        error: Exception,
        outcome: BatchOutcome,
        minted: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """A message that fails alone: postponed, or on its last receive quarantined by us.

        Quarantining it here (instead of letting the redrive policy move it) keeps the DLQ's
        invariant: every message there has a reason and a quarantine row, and no body in clear.
        If even the quarantine row cannot be written, whatever the cause - Postgres down included
        (until attack 19 that postponed it, and SQS's redrive moved it in clear) - the message is
        still sealed and dead-lettered with its reason (`_dead_letter_only`).
        """
        if not self._on_last_receive(message):
            self._postpone([message], outcome, reason=type(error).__name__)
            return
        rejection = Rejection(PROCESSING_FAILED, f"processing failed on every receive: {type(error).__name__}")
        kept = without_own_event_id(message, self._max_body_bytes)  # no id carrying its own values (R20-9)
        try:
            self._load_and_settle([message], [], [(kept, rejection)], outcome, minted=minted)
        except Exception as second:  # Postgres down or refusing it: postponing it would leave it to the redrive
            if self._stopped_by_refused_delete(second, outcome):
                return
            log.error(
                "quarantine of a failing message failed: %s; dead-lettering it sealed, without a quarantine row",
                type(second).__name__,
                extra={"message_id": message.message_id},
            )
            self._dead_letter_only(kept, rejection, second, outcome, minted)

    def _on_last_receive(self, message: QueueMessage) -> bool:
        """Whether SQS's redrive policy moves `message` (in clear) if it is left in the queue once more."""
        limit = self._redrive_limit()
        return limit is not None and message.receive_count >= limit

    def _dead_letter_unavailable(
        self,
        messages: Sequence[QueueMessage],
        validated: tuple[Accepted, Rejected] | None,
        error: DependencyDown,
        outcome: BatchOutcome,
        replays: Sequence[QueueMessage] = (),
        minted: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Messages whose batch failed for a dependency on their last receive: sealed and dead-lettered by us.

        Left in the queue, SQS's redrive would move them to the DLQ with their bodies in clear and no
        reason. With a quarantine row if Postgres answers; without one if it does not (`_dead_letter_only`).
        Only if OpenBao or the DLQ fails too are they postponed, and the redrive takes them.

        What validation decided stands (review 20, R20-9): a refused message keeps its own reason, and
        each goes under the id validation left it (an event_id carrying the event's own ip or device id
        dropped). Only accepted messages are `dependency_unavailable`; if validation itself failed
        (`validated` None: Transit down), each is, its id checked against its own values here. `replays`:
        the batch's events found loaded in step 2 (in neither list of `validated`), deleted and counted as
        duplicates - also when the quarantine rows cannot be written (review 37, R37-6).

        One the vault tokenized before the dependency failed (the database lost mid-load) records the
        tokens `minted` holds for it in its envelope: the vault stored its values, and no row took them
        (attack 35, N9); `dead-letters erase` names them for the privacy officer.
        """
        detail = f"its batch failed for a dependency on every receive: {error.dependency} ({type(error).__name__})"
        if isinstance(error, TokenizeOutcomeUnknown):  # the vault may hold its values: the letter says so
            detail = f"{TOKENIZE_OUTCOME_UNKNOWN}; {detail}"
        unavailable = Rejection(DEPENDENCY_UNAVAILABLE, detail)
        last = {m.message_id for m in messages}
        if validated is None:
            rejected: Rejected = [(without_own_event_id(m, self._max_body_bytes), unavailable) for m in messages]
        else:
            accepted, refused = validated
            rejected = [(m, r) for m, r in refused if m.message_id in last]
            decided = {m.message_id for m, _ in rejected}
            rejected += [(m, unavailable) for m, _ in accepted if m.message_id in last - decided]
        loaded = [m for m in replays if m.message_id in last]  # deleted with the batch: nothing to dead-letter
        committed: frozenset[str] = frozenset()
        # Its COMMIT may have committed (C49-2) - not when nothing reached the database (no connection, read-only):
        # asking then waited out the pool and the login check once more for each last receive (review 49, R49-4).
        if error.dependency == "database" and validated is not None and not error.nothing_stored:
            committed = self._loaded_meanwhile([(m, e) for m, e in validated[0] if m.message_id in last])
            rejected = [(m, r) for m, r in rejected if m.message_id not in committed]
        this_receive = [m for m in messages if m.message_id in committed]  # loaded by this receive: not replays
        log.error(
            "last receive of messages a dependency kept from loading: dead-lettering them sealed",
            extra={"message_ids": [m.message_id for m, _ in rejected], "dependency": error.dependency},
        )
        try:
            self._load_and_settle(messages, [], rejected, outcome, len(loaded), minted)
        except Exception as second:
            if self._stopped_by_refused_delete(second, outcome):
                return
            log.error("quarantine of messages a dependency kept from loading failed: %s", type(second).__name__)
            for message, rejection in rejected:
                self._dead_letter_only(message, rejection, second, outcome, minted)
            if loaded or this_receive:  # left here, SQS's redrive would move them to the DLQ in clear (R37-6)
                try:
                    failed = self._queue.delete([*loaded, *this_receive])
                except Misconfigured as refused:  # SQS refuses the delete (C49-7): the ETL stops
                    outcome.fatal = outcome.fatal or refused
                    failed = [*loaded, *this_receive]
                outcome.already_loaded += len({m.message_id for m in loaded} - {m.message_id for m in failed})
                outcome.delete_failures += len(failed)
        finally:  # their rows are this receive's COMMIT's: loaded, as the summary and the metrics say (R49-4)
            outcome.loaded += len(this_receive)

    def _loaded_meanwhile(self, accepted: Accepted) -> frozenset[str]:
        """The message ids of `accepted` whose events user_logins holds now, the same events (replays).

        A load whose COMMIT committed but whose answer was lost fails as the database down: on a last receive
        its events were dead-lettered as `dependency_unavailable` while user_logins held them (chaos 49, C49-2).
        Asked once; the database still not answering, none is taken for loaded (a later resend is a replay).
        """
        if not accepted:
            return frozenset()
        try:
            return self._store.loaded_before([event_key(m, e) for m, e in accepted]).replays
        except Exception as error:
            log.warning("whether a failed load committed is unknown: %s", type(error).__name__)
            return frozenset()

    def _dead_letter_only(
        self,
        message: QueueMessage,
        rejection: Rejection,
        error: Exception,
        outcome: BatchOutcome,
        minted: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Seal `message` (with its tokens in `minted`), send it to the DLQ with its reason; no quarantine row."""
        detail = f"{rejection.detail}; its quarantine row could not be written: {type(error).__name__}"
        only = [(message, Rejection(rejection.reason, detail))]
        try:
            dead_letter_and_delete(self._queue, [message], only, kept_bodies(only, self._sealer, minted), outcome)
        except Exception as third:  # the seal or the DLQ is down: the redrive policy takes it; the sweep returns it
            if self._stopped_by_refused_delete(third, outcome):
                return
            log.error(
                "dead-lettering a failing message failed: %s",
                type(third).__name__,
                extra={"message_id": message.message_id},
            )
            self._postpone([message], outcome, reason=type(third).__name__)

    @staticmethod
    def _stopped_by_refused_delete(error: Exception, outcome: BatchOutcome) -> bool:
        """True, and the ETL stopping (`outcome.fatal`), when `error` is SQS refusing a delete after the letters went.

        Taken for a failed quarantine, it had every letter sent a second time and the ETL running on (review 49,
        R49-3): the letters and quarantine rows stand; only the delete was refused (C49-7).
        """
        if error is not outcome.delete_refused or outcome.delete_refused is None:
            return False
        log.error("dead-lettered, but SQS refused their delete: %s", outcome.delete_refused)
        outcome.fatal = outcome.fatal or outcome.delete_refused
        return True

    def _postpone(
        self,
        messages: Sequence[QueueMessage],
        outcome: BatchOutcome,
        at_least: float = 0.0,
        reason: str = "unknown",
        dependency: str = "none",
    ) -> None:
        """Back off through visibility, longer for each receive (no hot loop); delete nothing.

        Never shorter than `at_least` seconds (the vault's retry-after). Each is recorded as left
        unprocessed by an error until a later batch settles it. Said by a rate-limited WARNING "batch
        postponed" naming `reason` (the error's class), `dependency` and counts only (PostponedNotice).
        """
        delay = min(
            max(retry_delay(max(m.receive_count for m in messages)), math.ceil(at_least)), MAX_RETRY_DELAY_SECONDS
        )
        failed = self._queue.change_visibility(messages, delay)
        if failed:
            log.warning("postponing failed (the queue's visibility timeout applies)", extra={"messages": len(failed)})
        outcome.retried += len(messages)
        outcome.errored.update(m.message_id for m in messages)
        self._postponed_notice.postponed(reason, dependency, len(messages), delay)


def _quarantine_record(message: QueueMessage, rejection: Rejection) -> QuarantineRecord:
    """The quarantine row of a refused message.

    A returned dead letter's own; one whose event_id another event holds keyed by its SQS message
    id (that event_id names the loaded event), as the load keys it.
    """
    if isinstance(rejection, ReturnedLetter):
        return rejection.quarantine_record()
    if rejection.reason == EVENT_ID_REUSED:  # found in step 2, with no row (the load keys its own so too)
        return quarantine_record(replace(message, event_id=None), rejection.reason, rejection.detail)
    return quarantine_record(message, rejection.reason, rejection.detail)
