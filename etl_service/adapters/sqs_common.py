"""What the SQS adapters share: boto errors as ETL errors, attributes, counts, the queue-pair check.

How boto errors become ETL errors, the attributes the ETL sets, a queue's counts, and the check
that two queues are a source and its own dead-letter queue, which the ETL and every DLQ
operator's command run before touching either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import botocore.exceptions

from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.ports import QueueDepth
from etl_service.service.sealing import SQS_MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

SQS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
EVENT_ID_ATTRIBUTE = "event_id"
SENT_TIMESTAMP_ATTRIBUTE = "tokenvault_sent_timestamp"
"""Set on a message re-sent from the DLQ: its original SentTimestamp (ms). Anyone who may send to
the queue can set it too, so the ETL believes it only with the tag `resend` adds
(sqs_resent_times.py) and within RESENT_MAX_AGE_MS before the message's own SentTimestamp
(`claimed_sent_ms`)."""
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


_IDENTITY_CODES = {"AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}
"""Refusals of the AWS identity in use: the fix is another key, or another policy for it."""
IDENTITY_HINT = (
    "check which AWS key is in use (AWS_ACCESS_KEY_ID, AWS_SHARED_CREDENTIALS_FILE or boto3's chain)"
    " and what its IAM policy allows (deploy/aws/*-sqs-policy.json)"
)
"""What an identity refusal tells a person to do (walk48, W48-1)."""
_SQS_MESSAGE_MAX = 300


def _access_denied_text(error: botocore.exceptions.ClientError) -> str:
    """AccessDenied's own message (it names the identity and the action refused), printable and cut short.

    Only AccessDenied's: it holds ARNs and an action name, never a message body; other codes' texts
    are not repeated (a signature mismatch's may quote the request).
    """
    message = str(error.response.get("Error", {}).get("Message", ""))
    text = "".join(c if c.isprintable() else "?" for c in message)[:_SQS_MESSAGE_MAX]
    return f" ({text})" if text else ""


def configuration_problem(error: Exception, action: str) -> str | None:
    """What a boto error says is wrong with the configuration (retrying cannot fix it), or None when transient."""
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return f"SQS {action}: no AWS credentials configured"
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in _IDENTITY_CODES:
            said = _access_denied_text(error) if code == "AccessDenied" else ""
            return f"SQS {action} refused: {code}{said}: {IDENTITY_HINT}"
        if code in _FATAL_CODES:
            return f"SQS {action} refused: {code}"
    return None


def raise_for(error: Exception, action: str) -> NoReturn:
    """Re-raise a boto error as fatal (configuration) or transient (retry later)."""
    problem = configuration_problem(error, action)
    if problem:
        raise QueueConfigurationError(problem) from None
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
    and at most RESENT_MAX_AGE_MS older, never 1970 or past year 9999. For a re-sent message's
    time the tag must verify as well (sqs_resent_times.believed_sent_times).
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


class QueuePairRefused(QueueConfigurationError):
    """ETL_QUEUE_URL and ETL_DLQ_URL are not a source queue and its own dead-letter queue (check_queue_pair)."""


@dataclass(frozen=True)
class QueuePair:
    """A source queue and its dead-letter queue, as check_queue_pair found them."""

    source_arn: str
    dlq_arn: str
    max_receive_count: int | None
    """The source's redrive limit (maxReceiveCount); None when SQS reported none readable."""


def queue_attributes(client: SQSClient, queue_url: str, setting: str) -> dict[str, str]:
    """The queue's QueueArn, RedrivePolicy and MaximumMessageSize; QueueConfigurationError when missing or unreachable.

    One GetQueueAttributes call on the queue given; `setting` (ETL_QUEUE_URL, ETL_DLQ_URL) is named
    after the error. Unreachable is a configuration error here: it is asked before anything else runs.
    """
    try:
        response = client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn", "RedrivePolicy", "MaximumMessageSize"]
        )
    except SQS_ERRORS as error:
        problem = configuration_problem(error, f"queue {queue_url}")
        unreachable = f"SQS queue {queue_url} is unreachable: {type(error).__name__}"
        raise QueueConfigurationError(f"{problem or unreachable} ({setting})") from None
    # Not dict(...): boto's stubs key the attributes by a Literal of names, and mypy holds dict keys invariant.
    return {name: value for name, value in response.get("Attributes", {}).items()}


def check_queue_pair(client: SQSClient, queue_url: str, dlq_url: str) -> QueuePair:
    """Prove that `dlq_url` (ETL_DLQ_URL) is the dead-letter queue of `queue_url` (ETL_QUEUE_URL), by QueueArn.

    Run by the ETL at start and by every `dead-letters` command before it touches a queue; it
    reads both queues' attributes only (two GetQueueAttributes calls, nothing received or sent).
    QueuePairRefused, naming both settings and the queues' ARNs, unless:
    - the DLQ is not the source itself (two URLs can name one queue): the ETL would read each
      refused event back and seal it again until discarded (attack round 8, Finding 6); `resend`
      and `redrive` would send bodies in clear into the DLQ (attack round 9, Break 4);
    - the source has a redrive policy: without one nothing ties the two queues together (an
      `erase` against any queue would check nothing and exit 0, attack round 9, Break 5) and a
      message failing on every receive would loop for ever;
    - its deadLetterTargetArn is the DLQ: what SQS's redrive moves would otherwise land where
      no command looks, and `resend` would send to a queue that is not the DLQ's source;
    - the DLQ has no redrive policy of its own: a dead-letter queue keeps its letters; each
      `list` or `show` is a receive, so one redriving elsewhere would move letters out of every
      tool's reach (round 9, Break 6), one redriving into the source would turn them into events.
    A missing, refused or unreachable queue raises QueueConfigurationError (raise_for's codes).
    """
    source = queue_attributes(client, queue_url, "ETL_QUEUE_URL")
    dlq = queue_attributes(client, dlq_url, "ETL_DLQ_URL")
    source_arn, dlq_arn = _queue_arn(source, "ETL_QUEUE_URL"), _queue_arn(dlq, "ETL_DLQ_URL")
    if dlq_arn == source_arn:
        raise QueuePairRefused(
            f"ETL_DLQ_URL names the source queue of ETL_QUEUE_URL ({source_arn}): refused events would be"
            " read back and dead-lettered again, and re-sent ones would land among the dead letters; set"
            " ETL_DLQ_URL to the source's dead-letter queue"
        )
    source_policy_text = source.get("RedrivePolicy")
    if not source_policy_text:
        raise QueuePairRefused(
            f"ETL_QUEUE_URL ({source_arn}) has no redrive policy, so nothing shows that ETL_DLQ_URL ({dlq_arn})"
            " is its dead-letter queue, and a message failing on every receive would be received for ever;"
            " give the source a redrive policy whose deadLetterTargetArn is ETL_DLQ_URL's queue"
            " (`python -m devstack.exercise_queue --queue-url URL` does for a development queue)"
        )
    source_policy = _redrive_policy(source_policy_text)
    source_target = _redrive_target(source_policy, "ETL_QUEUE_URL")
    if source_target != dlq_arn:
        raise QueuePairRefused(
            f"ETL_DLQ_URL ({dlq_arn}) is not the dead-letter queue of ETL_QUEUE_URL ({source_arn}), whose redrive"
            f" policy moves messages to {source_target}: the ETL would never take those back, and the dead-letter"
            " commands would work on the wrong queue; set ETL_DLQ_URL to that queue, or point the redrive policy"
            " at ETL_DLQ_URL"
        )
    dlq_policy = dlq.get("RedrivePolicy")
    if dlq_policy:
        dlq_target = _redrive_target(_redrive_policy(dlq_policy), "ETL_DLQ_URL")
        where = f"the source queue of ETL_QUEUE_URL ({source_arn})" if dlq_target == source_arn else dlq_target
        raise QueuePairRefused(
            f"ETL_DLQ_URL ({dlq_arn}), the dead-letter queue of ETL_QUEUE_URL, has a redrive policy of its own"
            f" moving its messages to {where}: every read of a dead letter counts as a receive, so dead letters"
            " would leave the DLQ for a queue no command reads (or come back as events); a dead-letter queue"
            " keeps its letters - remove that redrive policy"
        )
    for attributes, setting in ((source, "ETL_QUEUE_URL"), (dlq, "ETL_DLQ_URL")):
        _warn_if_larger_than_sized_for(attributes, setting)
    return QueuePair(source_arn, dlq_arn, _max_receive_count(source_policy))


def _warn_if_larger_than_sized_for(attributes: dict[str, str], setting: str) -> None:
    """A warning when the queue takes messages over the 256 KiB the ETL is sized for (SQS's default is now 1 MiB).

    Nothing is lost either way (a body over ETL_MAX_BODY_BYTES is quarantined, its body not kept),
    so the start goes on; but the sealed dead letters, the claim bounds and each receive's memory
    assume 256 KiB, and the embedded stack and compose set it (review 23, R23-9).
    """
    size = attributes.get("MaximumMessageSize", "")
    if size.isdigit() and int(size) > SQS_MAX_MESSAGE_BYTES:
        log.warning(
            "queue takes messages larger than the ETL is sized for: set its MaximumMessageSize to %d",
            SQS_MAX_MESSAGE_BYTES,
            extra={"setting": setting, "maximum_message_size": int(size)},
        )


def _queue_arn(attributes: dict[str, str], setting: str) -> str:
    """The queue's QueueArn; QueueConfigurationError when SQS did not report one (nothing to compare)."""
    arn = attributes.get("QueueArn")
    if not arn:
        raise QueueConfigurationError(f"SQS did not report the QueueArn of the queue of {setting}")
    return arn


def _redrive_policy(text: str) -> dict[str, object]:
    """A RedrivePolicy's JSON object, parsed once; {} when it is none (its fields then read as missing)."""
    try:
        policy = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return policy if isinstance(policy, dict) else {}


def _redrive_target(policy: dict[str, object], setting: str) -> str:
    """The deadLetterTargetArn of a RedrivePolicy; QueuePairRefused when it names none."""
    target = policy.get("deadLetterTargetArn")
    if not isinstance(target, str) or not target:
        raise QueuePairRefused(f"the redrive policy of the queue of {setting} names no deadLetterTargetArn")
    return target


def redrive_limit_of(policy_text: str) -> int | None:
    """The maxReceiveCount of a queue's RedrivePolicy attribute ("" or none: None)."""
    return _max_receive_count(_redrive_policy(policy_text)) if policy_text else None


def _max_receive_count(policy: dict[str, object]) -> int | None:
    """The redrive limit (maxReceiveCount), or None when the policy holds no number."""
    count = policy.get("maxReceiveCount")
    try:
        return int(count) if isinstance(count, str | int) else None
    except ValueError:
        return None
