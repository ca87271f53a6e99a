"""What the ETL handles: queue messages in, user_logins rows and quarantine records out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from etl_service.domain.validation import LoginEvent


@dataclass(frozen=True)
class QueueMessage:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str
    sent_timestamp_ms: int
    receive_count: int
    event_id: str | None = None
    """The producer's idempotency key (message attribute `event_id`), when it set one."""

    @property
    def idempotency_key(self) -> str:
        """What makes a redelivered or replayed event recognisable: event_id, else the SQS id."""
        return self.event_id or self.message_id

    @property
    def sent_at(self) -> datetime:
        """When SQS accepted the message (its SentTimestamp), in UTC."""
        return datetime.fromtimestamp(self.sent_timestamp_ms / 1000, tz=UTC)

    def __repr__(self) -> str:
        return f"QueueMessage(message_id={self.message_id!r}, body=<{len(self.body)} chars>)"


@dataclass(frozen=True)
class UserLoginRow:
    """A row of user_logins: tokens in place of ip and device_id."""

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
    sent_at: datetime


def to_row(message: QueueMessage, event: LoginEvent, ip_token: str, device_token: str) -> UserLoginRow:
    """Flatten an event into a row; create_date is the UTC date the event was sent."""
    sent_at = message.sent_at
    return UserLoginRow(
        user_id=event.user_id,
        device_type=event.device_type,
        masked_ip=ip_token,
        masked_device_id=device_token,
        locale=event.locale,
        app_version=event.app_version_number,
        create_date=sent_at.date(),
        app_version_text=event.app_version,
        event_id=message.idempotency_key,
        sqs_message_id=message.message_id,
        sent_at=sent_at,
    )
