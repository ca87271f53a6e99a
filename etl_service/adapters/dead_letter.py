"""One DLQ message as its readers see it (DeadLetter), read from what SQS answers (to_dead_letter).

Its metadata (reason, detail, event id, sent times) is readable by anyone with access to the
queue, and written by anyone who may send to it: reading never raises on what a sender put in a
body or an attribute. The body is an envelope the ETL sealed (service/sealing.py), or, for a
message SQS's redrive moved, the original as it was; `DeadLetter` reads it once, for the
listing's readers (own_dead_letters, `dead-letters list`/`erase`, take-backs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from etl_service.adapters.crash_loop_letters import TAKEN_BACK_ATTRIBUTE, taken_back_count
from etl_service.adapters.sqs_common import (
    EVENT_ID_ATTRIBUTE,
    MAX_TIMESTAMP_MS,
    SENT_TIMESTAMP_ATTRIBUTE,
    timestamp_ms,
)
from etl_service.domain.resent_times import (
    RESENT_FROM_ATTRIBUTE,
    SENT_TIME_TAG_ATTRIBUTE,
    ResentTime,
    well_formed,
)
from etl_service.service.own_dead_letters import read_envelope, read_shaped_as_written
from etl_service.service.returned_letters import WrittenEnvelope
from etl_service.service.sealing import MINTED_FIELD, read_dead_letter_body


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
    producer_event_id: str | None = None
    """The `event_id` attribute as a producer set it (the ETL keeps it on its dead letters; a redrive
    moves it with the original), None without one: what `dead-letters erase` matches besides the
    body. `event_id` above falls back to ids SQS issued, which no producer chose."""
    is_envelope: bool | None = None
    """Whether `raw_body` reads as a dead-letter envelope (read_dead_letter_body), whatever its shape:
    as the listing read it; None when not given, and then read here once."""
    carried_time: ResentTime | None = None
    """The original sent time and its tag as a message `resend` re-sent carries them (then moved here by
    SQS's redrive, as it was), None without all three attributes well formed: re-sent as they are
    with the same body, for the ETL to check (a take-back, a CLEAR letter's resend)."""
    shaped_as_written: bool | None = None
    """Whether `raw_body` is byte for byte an envelope the ETL writes (own_dead_letters.read_shaped_as_written):
    from the same reading as `is_envelope`, so `in_clear` does not read the body again; None when
    not given, and then read here once."""
    taken_back: int = 0
    """How many take-backs sent this message back from the DLQ before (crash_loop_letters)."""
    sqs_sent_timestamp_ms: int = 0
    """The SentTimestamp SQS gives this DLQ message (its system attribute; the redrive keeps the
    original's), 0 without one: what a take-back vouches for (take_back_times), never an attribute."""
    minted_tokens: str | None = None
    """The envelope's sealed `minted_tokens` (sealing.py): the tokens the vault minted for the message
    before it was dead-lettered, None without them (every envelope sealed before the field, a body in clear)."""

    def __post_init__(self) -> None:
        if self.is_envelope is None or self.shaped_as_written is None:  # a letter built by hand: read once here
            fields = read_dead_letter_body(self.raw_body)
            if self.is_envelope is None:
                object.__setattr__(self, "is_envelope", fields is not None)
            if self.shaped_as_written is None:
                object.__setattr__(self, "shaped_as_written", read_shaped_as_written(self.raw_body, fields))

    @property
    def written_envelope(self) -> WrittenEnvelope | None:
        """`raw_body` as returned_letters.written_envelope reads it, from the listing's one reading (no parse).

        What a take-back tells the ETL's own letters by (own_dead_letters). From `is_envelope`,
        `sealed_body`, `key` and `note`: a letter built by hand must give them as `raw_body` reads.
        """
        fields = (
            {"sealed_body": self.sealed_body, "key": self.key, "note": self.note, MINTED_FIELD: self.minted_tokens}
            if self.is_envelope
            else None
        )
        return read_envelope(self.raw_body, fields)

    @property
    def sent_at(self) -> str:
        """When the original was sent, ISO-8601 UTC ("unknown" when no time is recorded)."""
        if not 0 < self.sent_timestamp_ms <= MAX_TIMESTAMP_MS:
            return "unknown"
        return datetime.fromtimestamp(self.sent_timestamp_ms / 1000, UTC).isoformat(timespec="seconds")


def _attribute(raw: Any, name: str) -> str | None:
    value = (raw.get("MessageAttributes") or {}).get(name)
    text = value.get("StringValue") if isinstance(value, dict) else None
    return text if isinstance(text, str) else None


def to_dead_letter(raw: Any) -> DeadLetter:
    """One DLQ message as a DeadLetter; never raises on what a sender put in its body or attributes."""
    body = raw.get("Body") or ""
    read = read_dead_letter_body(body)
    envelope = read or {}
    # When the original was sent: recorded by the ETL when it dead-lettered the message, or on a
    # message re-sent from the DLQ earlier (then moved back by the redrive), else SQS's own.
    # The first two are attributes anyone who may send to the DLQ or the queue sets: a value
    # that is no time is skipped, and the ETL believes a re-sent time only within the DLQ's
    # retention (sqs_common.claimed_sent_ms).
    sent = (
        timestamp_ms(_attribute(raw, "source_sent_timestamp"))
        or timestamp_ms(_attribute(raw, SENT_TIMESTAMP_ATTRIBUTE))
        or timestamp_ms((raw.get("Attributes") or {}).get("SentTimestamp"))
        or 0
    )
    producer_event_id = _attribute(raw, EVENT_ID_ATTRIBUTE)
    carried_ms = timestamp_ms(_attribute(raw, SENT_TIMESTAMP_ATTRIBUTE))
    tag, resent_from = _attribute(raw, SENT_TIME_TAG_ATTRIBUTE), _attribute(raw, RESENT_FROM_ATTRIBUTE)
    carried = None
    if carried_ms and well_formed(tag, resent_from):
        carried = ResentTime(carried_ms, str(resent_from), str(tag))
    return DeadLetter(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        reason=_attribute(raw, "reason"),
        detail=_attribute(raw, "reason_detail") or "",
        event_id=producer_event_id or _attribute(raw, "source_message_id") or raw["MessageId"],
        sent_timestamp_ms=sent,
        sealed_body=envelope.get("sealed_body"),
        key=envelope.get("key"),
        note=envelope.get("note"),
        raw_body=body,
        producer_event_id=producer_event_id,
        carried_time=carried,
        is_envelope=read is not None,
        shaped_as_written=read_shaped_as_written(body, read),
        taken_back=taken_back_count(_attribute(raw, TAKEN_BACK_ATTRIBUTE)),
        sqs_sent_timestamp_ms=timestamp_ms((raw.get("Attributes") or {}).get("SentTimestamp")) or 0,
        minted_tokens=envelope.get(MINTED_FIELD),
    )
