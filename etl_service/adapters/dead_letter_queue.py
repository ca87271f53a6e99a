"""The DLQ as an operator sees it: list dead letters with their reasons, open one, re-send it fixed.

Reading the whole DLQ means receiving every message: each read takes a short lease, and the
messages are released again when the listing ends (`release`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from etl_service.adapters.sqs import EVENT_ID_ATTRIBUTE, SENT_TIMESTAMP_ATTRIBUTE
from etl_service.service.sealing import read_dead_letter_body

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class DeadLetterError(RuntimeError):
    """An operator command could not complete; the message says why."""


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ message: metadata readable by anyone with access to the queue, the body sealed."""

    message_id: str
    receipt_handle: str
    reason: str | None
    detail: str
    event_id: str
    sent_timestamp_ms: int
    sealed_body: str | None
    key: str | None
    note: str | None
    raw_body: str
    """The SQS body as it is (the envelope; for a message SQS's redrive moved, the original)."""

    @property
    def sent_at(self) -> str:
        """When the original was sent, ISO-8601 UTC."""
        return datetime.fromtimestamp(self.sent_timestamp_ms / 1000, UTC).isoformat(timespec="seconds")


def _attribute(raw: Any, name: str) -> str | None:
    value = raw.get("MessageAttributes", {}).get(name, {}).get("StringValue")
    return str(value) if value is not None else None


def _to_dead_letter(raw: Any) -> DeadLetter:
    envelope = read_dead_letter_body(raw.get("Body", "")) or {}
    sent = _attribute(raw, "source_sent_timestamp") or raw.get("Attributes", {}).get("SentTimestamp", "0")
    return DeadLetter(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        reason=_attribute(raw, "reason"),
        detail=_attribute(raw, "reason_detail") or "",
        event_id=_attribute(raw, EVENT_ID_ATTRIBUTE) or _attribute(raw, "source_message_id") or raw["MessageId"],
        sent_timestamp_ms=int(sent) if str(sent).isdigit() else 0,
        sealed_body=envelope.get("sealed_body"),
        key=envelope.get("key"),
        note=envelope.get("note"),
        raw_body=raw.get("Body", ""),
    )


class DeadLetterQueue:
    """Operator access to the DLQ of one source queue."""

    def __init__(self, client: SQSClient, queue_url: str, dlq_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._held: list[DeadLetter] = []

    def list(self, limit: int = 10_000) -> list[DeadLetter]:
        """Up to `limit` dead letters (each held for 60 s until release())."""
        found: list[DeadLetter] = []
        while len(found) < limit:
            try:
                batch = self._client.receive_message(
                    QueueUrl=self._dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=60,
                    MessageSystemAttributeNames=["SentTimestamp"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except _ERRORS as error:
                raise DeadLetterError(f"reading the DLQ failed: {type(error).__name__}") from None
            if not batch:
                break
            found += [_to_dead_letter(m) for m in batch]
        self._held += found
        return found

    def release(self) -> None:
        """Make the dead letters listed visible again."""
        held, self._held = self._held, []
        for start in range(0, len(held), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": d.receipt_handle, "VisibilityTimeout": 0}
                for i, d in enumerate(held[start : start + 10])
            ]
            with contextlib.suppress(*_ERRORS):  # else their 60 s lease runs out instead
                self._client.change_message_visibility_batch(QueueUrl=self._dlq_url, Entries=entries)  # type: ignore[arg-type]

    def resend(self, dead: DeadLetter, body: str) -> str:
        """Send `body` to the source queue under the dead letter's event id and sent time; delete the dead letter.

        Returns the new message id. The event id keeps the load idempotent: re-sending twice
        loads one row.
        """
        try:
            sent = self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=body,
                MessageAttributes={
                    EVENT_ID_ATTRIBUTE: {"DataType": "String", "StringValue": dead.event_id},
                    SENT_TIMESTAMP_ATTRIBUTE: {"DataType": "Number", "StringValue": str(dead.sent_timestamp_ms)},
                },
            )
            self._client.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=dead.receipt_handle)
        except _ERRORS as error:
            raise DeadLetterError(f"re-sending failed: {type(error).__name__}") from None
        self._held = [d for d in self._held if d.message_id != dead.message_id]
        return str(sent["MessageId"])
