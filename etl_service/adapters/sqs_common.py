"""What the SQS adapters share: how boto errors become ETL errors, and the attributes the ETL sets."""

from __future__ import annotations

from typing import NoReturn

import botocore.exceptions

from etl_service.errors import DependencyDown, Misconfigured

SQS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
EVENT_ID_ATTRIBUTE = "event_id"
SENT_TIMESTAMP_ATTRIBUTE = "tokenvault_sent_timestamp"
"""Set on a message re-sent from the DLQ: its original SentTimestamp (ms)."""
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


def timestamp_ms(text: str | None) -> int | None:
    """A millisecond timestamp attribute, or None when it is absent or not one."""
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 15 else None
