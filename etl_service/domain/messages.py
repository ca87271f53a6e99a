"""What the ETL handles: queue messages in, user_logins rows and quarantine records out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import NamedTuple

from etl_service.domain.validation import LoginEvent
from tokenvault_common.pii_text import address_in, may_hold_an_address, undefanged
from tokenvault_common.values import normalize_ip


@dataclass(frozen=True)
class QueueMessage:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str
    sent_timestamp_ms: int
    receive_count: int
    event_id: str | None = None
    """The producer's idempotency key (message attribute `event_id`), when it set a valid one."""
    event_id_problem: str | None = None
    """Why the `event_id` attribute the producer set was refused (see check_event_id); the
    message is then quarantined under its SQS message id."""
    dead_letter_attributes: tuple[tuple[str, str], ...] = ()
    """The ETL's own dead-letter attributes (DEAD_LETTER_ATTRIBUTES) the message carries: only a
    dead letter moved back from the DLQ as it was has any (service/returned_letters.py).
    `source_sent_timestamp` is there only as a believable time in milliseconds (the adapter
    checks it: sqs_common.claimed_sent_ms); the others are as the sender wrote them."""

    @property
    def idempotency_key(self) -> str:
        """What makes a redelivered or replayed event recognisable: event_id, else the SQS id."""
        return self.event_id or self.message_id

    @property
    def sent_at(self) -> datetime:
        """When SQS accepted the message (its SentTimestamp), in UTC."""
        return _utc_datetime(self.sent_timestamp_ms)

    def __repr__(self) -> str:
        return f"QueueMessage(message_id={self.message_id!r}, body=<{len(self.body)} chars>)"


DEAD_LETTER_ATTRIBUTES = ("reason", "reason_detail", "source_message_id", "source_sent_timestamp")
"""The attributes the ETL gives each dead letter besides the event id (SqsQueue.dead_letter)."""

MAX_EVENT_ID_LENGTH = 128
"""user_logins.event_id and etl_quarantine.event_id are varchar(128)."""


def check_event_id(raw: str | None) -> tuple[str | None, str | None]:
    """(the event id, None) when `raw` is usable as the idempotency key, else (None, why not).

    Checked before anything reaches Postgres: a key the table cannot hold would fail the whole
    batch's COPY, again on every redelivery. An id that carries an address (IP, e-mail, MAC;
    tokenvault_common.pii_text) is refused too: event ids are stored in clear in user_logins,
    etl_quarantine and the DLQ's attributes, where erasure cannot reach them. The reason never
    quotes the id. A pattern cannot tell every address from a counter (an IPv4 as an integer,
    3405803783): the event's own ip and device id are compared with the id once its body is
    parsed (etl_service.domain.own_values).
    """
    if raw is None or raw == "":
        return None, None
    if len(raw) > MAX_EVENT_ID_LENGTH:
        return None, f"the event_id attribute is longer than {MAX_EVENT_ID_LENGTH} characters"
    if not raw.isprintable() or raw != raw.strip():
        return None, "the event_id attribute contains blanks at its ends or unprintable characters"
    if raw.isascii() and not may_hold_an_address(raw):  # the usual opaque ids: one regex search
        return raw, None
    address = address_in(undefanged(raw), broad=False)
    if address:
        return None, f"the event_id attribute must be an opaque id, but {address}"
    return raw, None


class UserLoginRow(NamedTuple):
    """A row of user_logins: tokens in place of ip and device_id.

    A NamedTuple whose field order is the COPY column order: the loader writes it as it is,
    and building one costs a third of a frozen dataclass (it is built once per message).
    """

    user_id: str
    device_type: str
    masked_ip: str
    masked_device_id: str
    locale: str | None
    app_version: int
    create_date: date
    app_version_text: str
    event_id: str
    sqs_message_id: str
    sent_at: datetime


@dataclass(frozen=True)
class QuarantineRecord:
    """Metadata of a refused message: no body, no PII."""

    event_id: str
    sqs_message_id: str
    reason: str
    detail: str
    sent_at: datetime | None
    """When the message was sent; None only when its timestamp is no time (quarantine_record)."""


def quarantine_record(message: QueueMessage, reason: str, detail: str) -> QuarantineRecord:
    """The quarantine record of `message`; never raises on message data.

    The last resort for a message that fails on every receive builds one: if it could fail, the
    message would be left for SQS's redrive policy to move to the DLQ in clear.
    """
    try:
        sent_at: datetime | None = message.sent_at
    except (ValueError, OverflowError, OSError):  # out of datetime's range
        sent_at = None
    return QuarantineRecord(message.idempotency_key, message.message_id, reason, detail, sent_at)


EVENT_ID_REUSED = "event_id_reused"
"""The reason of a message whose event_id is already loaded for a different event (a collision,
not a replay): the loaded row differs in a column that holds no token."""


def event_id_reused(row: UserLoginRow, loaded_message_id: str) -> QuarantineRecord:
    """The quarantine record of a row refused because its event_id is loaded for another event.

    Keyed by the row's SQS message id, not its event_id: the event_id names the loaded event,
    and each message reusing it gets its own record. The detail names the loaded row's message
    id (both are SQS metadata), never a value.
    """
    detail = event_id_reused_detail(loaded_message_id)
    return QuarantineRecord(row.sqs_message_id, row.sqs_message_id, EVENT_ID_REUSED, detail, row.sent_at)


def event_id_reused_detail(loaded_message_id: str) -> str:
    """The detail of an `event_id_reused` quarantine (row and DLQ alike): message ids, never a value."""
    return (
        f"its event_id is already loaded from message {loaded_message_id}, which differs in user_id,"
        " device_type, locale, app_version or create_date"
    )


def event_id_held_in_batch_detail(first_message_id: str) -> str:
    """The detail of an `event_id_reused` refused before tokenizing: an earlier event of its batch holds its event_id.

    Message ids only, never a value nor which field differs (attack 38, M4).
    """
    return (
        f"its event_id is held by an earlier event of its batch, message {first_message_id}, which differs"
        " from it (in its ip, device_id or a column without a token)"
    )


def event_content(message: QueueMessage, event: LoginEvent) -> tuple[object, ...]:
    """What makes two events under one event_id the same event: every column `to_row` writes but the keys.

    The columns without tokens as `event_key` has them, and the ip and device id themselves (a token stands
    for its value, so equal values are equal tokens). Compared in memory, within a batch (attack 38, M4).
    """
    # [2:]: past event_id and message id; the ip as the vault reads it - `::ffff:10.0.0.1` is 10.0.0.1's token, so a
    # retry spelling it so is a duplicate, not another event (review 38, R38-7); the device id is normalized already
    return (*event_key(message, event)[2:], normalize_ip(event.ip), event.device_id)


@lru_cache(maxsize=4096)
def _utc_datetime(timestamp_ms: int) -> datetime:
    """Messages of a batch share few distinct SentTimestamps: each is converted once."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


@lru_cache(maxsize=4096)
def _utc_date(timestamp_ms: int) -> date:
    return _utc_datetime(timestamp_ms).date()


class EventKey(NamedTuple):
    """An accepted event's columns of user_logins that hold no token, with its keys.

    All that is needed to tell, before tokenizing, a replay of a loaded event from a different
    event under its event_id.
    """

    event_id: str
    sqs_message_id: str
    user_id: str
    device_type: str
    locale: str | None
    app_version: int
    app_version_text: str
    create_date: date


def event_key(message: QueueMessage, event: LoginEvent) -> EventKey:
    """What `to_row` would write of `event` in the columns without tokens (never its ip or device id)."""
    return EventKey(
        message.event_id or message.message_id,
        message.message_id,
        event.user_id,
        event.device_type,
        event.locale,
        event.app_version_number,
        event.app_version,
        _utc_date(message.sent_timestamp_ms),
    )


def to_row(message: QueueMessage, event: LoginEvent, ip_token: str, device_token: str) -> UserLoginRow:
    """Flatten an event into a row; create_date is the UTC date the event was sent."""
    sent_ms = message.sent_timestamp_ms
    return UserLoginRow(
        event.user_id,
        event.device_type,
        ip_token,
        device_token,
        event.locale,
        event.app_version_number,
        _utc_date(sent_ms),
        event.app_version,
        message.event_id or message.message_id,
        message.message_id,
        _utc_datetime(sent_ms),
    )
