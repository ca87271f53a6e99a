"""What the SQS adapters share: how boto errors become ETL errors, the attributes the ETL sets, and a queue's counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import botocore.exceptions

from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.ports import QueueDepth

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
EVENT_ID_ATTRIBUTE = "event_id"
SENT_TIMESTAMP_ATTRIBUTE = "tokenvault_sent_timestamp"
"""Set on a message re-sent from the DLQ: its original SentTimestamp (ms). Anyone who may send to
the queue can set it too, so the ETL believes it only within RESENT_MAX_AGE_MS before the
message's own SentTimestamp (`claimed_sent_ms`)."""
MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant a Python datetime holds: later values are no time."""
RESENT_MAX_AGE_MS = 14 * 24 * 3600 * 1000
"""SQS's longest retention (14 days, the DLQ's): a dead letter is re-sent at most this long after
it was sent, so a genuine re-sent message's original time is at most this much older than the copy."""
# Errors that retrying cannot fix: the service must stop and say so.
_FATAL_CODES = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}


class QueueConfigurationError(Misconfigured):
    """The queue cannot be used as configured (no credentials, no such queue, access denied)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "sqs")


def raise_for(error: Exception, action: str) -> NoReturn:
    """Re-raise a boto error as fatal (configuration) or transient (retry later)."""
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        raise QueueConfigurationError(f"SQS {action}: no AWS credentials configured") from None
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in _FATAL_CODES:
            raise QueueConfigurationError(f"SQS {action} refused: {code}") from None
    raise DependencyDown(f"SQS {action} failed: {type(error).__name__}", "sqs") from error


def timestamp_ms(text: object) -> int | None:
    """A millisecond timestamp attribute (1 to MAX_TIMESTAMP_MS), or None when it is absent or not one.

    Never raises, whatever `text` holds: attributes are written by whoever may send to the queue.
    """
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 15:
        return None
    value = int(text)
    return value if 0 < value <= MAX_TIMESTAMP_MS else None


def claimed_sent_ms(text: object, sqs_sent_ms: int) -> int | None:
    """The original sent time a re-sent message claims (SENT_TIMESTAMP_ATTRIBUTE), if believable, else None.

    Believable: a timestamp no later than the copy's own SentTimestamp (`sqs_sent_ms`, set by SQS)
    and at most RESENT_MAX_AGE_MS older. A producer can therefore backdate its own event by at
    most the DLQ's retention, never into 1970 or past year 9999.
    """
    claimed = timestamp_ms(text)
    if claimed is None or not sqs_sent_ms - RESENT_MAX_AGE_MS <= claimed <= sqs_sent_ms:
        return None
    return claimed


def approximate_counts(client: SQSClient, queue_url: str, action: str) -> QueueDepth:
    """SQS's approximate visible, in-flight (not visible) and delayed counts of `queue_url`.

    One GetQueueAttributes call on the queue given (tests/unit/test_sqs_iam_policies.py counts it
    against the caller's IAM policy); failures raise as raise_for does, `action` naming the call.
    """
    try:
        attributes = client.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
    except SQS_ERRORS as error:
        raise_for(error, action)
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )
