"""Processing one batch of messages: validate, tokenize, load, dead-letter, delete.

Order matters for "lose nothing, duplicate nothing":
1. validate each message on its own;
2. tokenize the distinct ips and device ids of the batch in one vault call;
3. commit rows and quarantine records in one transaction (idempotent on the event key);
4. copy rejected messages to the DLQ;
5. only then delete from the source queue.
A crash or outage anywhere before 5 leaves the messages in the queue; redelivery repeats the
steps and the idempotent load adds nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from etl_service.domain.messages import QuarantineRecord, QueueMessage, UserLoginRow, to_row
from etl_service.domain.validation import (
    DEFAULT_DEVICE_TYPES,
    MAX_BODY_BYTES,
    LoginEvent,
    Rejection,
    parse_login_event,
)
from etl_service.service.outcomes import BatchOutcome
from etl_service.service.ports import LoginStore, Queue, Tokenizer, TransientError

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_SECONDS = 900


def retry_delay(receive_count: int, base_seconds: int = 2) -> int:
    """Exponential backoff from the SQS receive count: 2, 4, 8 ... capped at 15 minutes."""
    return int(min(base_seconds * 2 ** max(receive_count - 1, 0), MAX_RETRY_DELAY_SECONDS))


class BatchProcessor:
    """Runs the five steps above for one batch."""

    def __init__(
        self,
        queue: Queue,
        tokenizer: Tokenizer,
        store: LoginStore,
        device_types: frozenset[str] = DEFAULT_DEVICE_TYPES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._queue = queue
        self._tokenizer = tokenizer
        self._store = store
        self._device_types = device_types
        self._max_body_bytes = max_body_bytes

    def process(self, messages: Sequence[QueueMessage]) -> BatchOutcome:
        """Process `messages`; a dependency outage or a bug postpones them instead of raising."""
        started = time.monotonic()
        outcome = self._process(messages)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _process(self, messages: Sequence[QueueMessage]) -> BatchOutcome:
        outcome = BatchOutcome(received=len(messages))
        if not messages:
            return outcome
        try:
            accepted, rejected = self._validate(messages)
            rows, rejected = self._tokenize(accepted, rejected)
            records = [
                QuarantineRecord(m.idempotency_key, m.message_id, r.reason, r.detail, m.sent_at) for m, r in rejected
            ]
            written = self._store.write(rows, records)
        except TransientError as error:
            log.warning("batch postponed: %s", error, extra={"messages": len(messages)})
            outcome.failed_dependency = error.dependency
            self._postpone(messages, outcome)
            return outcome
        except Exception as error:  # a bug must not lose the batch: redelivery, then the DLQ via redrive
            log.error(
                "batch failed unexpectedly: %s",
                type(error).__name__,
                extra={"message_ids": [m.message_id for m in messages]},
            )
            if len(messages) > 1:
                return self._one_by_one(messages)
            self._postpone(messages, outcome)
            return outcome
        outcome.loaded = written.rows_inserted
        outcome.already_loaded = len(rows) - written.rows_inserted
        self._finish(messages, rejected, outcome)
        finished = time.time()
        outcome.ages_seconds = [max(finished - m.sent_timestamp_ms / 1000, 0.0) for m in messages]
        return outcome

    def _one_by_one(self, messages: Sequence[QueueMessage]) -> BatchOutcome:
        """Isolate whatever broke the batch: each message alone, so only the poison one is postponed."""
        outcome = BatchOutcome()
        for message in messages:
            single = self._process([message])
            outcome.add(single)
            outcome.ages_seconds += single.ages_seconds
            outcome.failed_dependency = outcome.failed_dependency or single.failed_dependency
        return outcome

    def _postpone(self, messages: Sequence[QueueMessage], outcome: BatchOutcome) -> None:
        """Back off through visibility, longer for each receive (no hot loop); delete nothing."""
        delay = retry_delay(max(m.receive_count for m in messages))
        try:
            self._queue.change_visibility(messages, delay)
        except TransientError as error:
            log.warning("postponing failed (the queue's visibility timeout applies): %s", error)
        outcome.retried = len(messages)

    def _validate(
        self, messages: Sequence[QueueMessage]
    ) -> tuple[list[tuple[QueueMessage, LoginEvent]], list[tuple[QueueMessage, Rejection]]]:
        accepted, rejected = [], []
        for message in messages:
            try:
                accepted.append((message, parse_login_event(message.body, self._device_types, self._max_body_bytes)))
            except Rejection as rejection:
                rejected.append((message, rejection))
        return accepted, rejected

    def _tokenize(
        self,
        accepted: list[tuple[QueueMessage, LoginEvent]],
        rejected: list[tuple[QueueMessage, Rejection]],
    ) -> tuple[list[UserLoginRow], list[tuple[QueueMessage, Rejection]]]:
        if not accepted:
            return [], rejected
        ips = sorted({e.ip for _, e in accepted})
        device_ids = sorted({e.device_id for _, e in accepted})
        ip_tokens, device_tokens = self._tokenizer.tokenize(ips, device_ids)
        rows = []
        for message, event in accepted:
            ip_token, device_token = ip_tokens.get(event.ip), device_tokens.get(event.device_id)
            if ip_token is None or device_token is None:
                field_name = "ip" if ip_token is None else "device_id"
                rejected.append((message, Rejection("vault_rejected_value", f"the vault refused field {field_name!r}")))
                continue
            rows.append(to_row(message, event, ip_token, device_token))
        return rows, rejected

    def _finish(
        self,
        messages: Sequence[QueueMessage],
        rejected: list[tuple[QueueMessage, Rejection]],
        outcome: BatchOutcome,
    ) -> None:
        undeletable: set[str] = set()
        for message, rejection in rejected:
            try:
                self._queue.dead_letter(message, rejection.reason, rejection.detail)
            except TransientError as error:
                # Keep it in the source queue: its redelivery dead-letters it again.
                log.warning("dead-lettering failed: %s", error, extra={"message_id": message.message_id})
                undeletable.add(message.message_id)
                continue
            outcome.quarantined += 1
            outcome.reasons[rejection.reason] += 1
            log.info("quarantined", extra={"message_id": message.message_id, "reason": rejection.reason})
        deletable = [m for m in messages if m.message_id not in undeletable]
        try:
            failed = self._queue.delete(deletable)
        except TransientError as error:
            log.warning("delete failed; messages will be redelivered and skipped as duplicates: %s", error)
            failed = deletable
        outcome.delete_failures = len(failed)
        outcome.retried += len(undeletable)
