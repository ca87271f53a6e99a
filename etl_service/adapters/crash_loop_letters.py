"""A take-back's loop guard: a message SQS's redrive moves to the DLQ again after a take-back stays there, sealed.

Run mode takes back every reasonless DLQ message every few minutes (service/periodic_take_back.py).
The one case left for SQS's redrive is a crash loop: a message that kills the ETL (OOM, a native
crash) before it can dead-letter it. Taken back again and again, it would kill up to maxReceiveCount
processes each period, and every message in flight with them would spend a receive (review 20,
R20-12). So each take-back counts itself on the copy it sends (TAKEN_BACK_ATTRIBUTE, moved along
by the redrive); a message the redrive moved again after MAX_TAKE_BACKS take-backs is not sent
back: it is sealed and dead-lettered in place as `crash_loop` (its body never read here), logged
by message id, counted (TakeBack.crash_looped: `etl_messages_quarantined_total{reason="crash_loop"}`,
which pages), and the operator decides (`dead-letters show`/`resend`). The attribute is anyone's
to set: a producer setting it only gets its message sealed in the DLQ, should the redrive move it.

Sealing in place is the ETL's alone (`CrashLoopLetters`, given to the take-back by SqsQueue when it
has a sealer): the operators' `dead-letters redrive` has none, and their IAM policy no SendMessage
on the DLQ (tests/unit/test_sqs_iam_policies.py reads each identity's calls from its files).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from etl_service.adapters.sqs_common import EVENT_ID_ATTRIBUTE, SQS_ERRORS, raise_for
from etl_service.domain.validation import own_value_in_body
from etl_service.service.outcomes import CRASH_LOOP
from etl_service.service.sealing import SQS_MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from etl_service.adapters.dead_letter import DeadLetter
    from etl_service.service.ports import BodySealer

log = logging.getLogger(__name__)

TAKEN_BACK_ATTRIBUTE = "tokenvault_taken_back"
"""How many take-backs sent this message back from the DLQ (set on each copy a take-back sends)."""
MAX_TAKE_BACKS = 1
"""A message the redrive moves again after this many take-backs is dead-lettered as CRASH_LOOP."""
_MAX_COUNT_DIGITS = 6


def taken_back_count(text: str | None) -> int:
    """The take-backs an attribute value records; 0 when absent or no small count (anyone sets it)."""
    if text is None or not text.isdecimal() or not text.isascii() or len(text) > _MAX_COUNT_DIGITS:
        return 0
    return int(text)


def taken_back_attribute(count: int) -> dict[str, Any]:
    """The attribute value recording `count` take-backs."""
    return {"DataType": "Number", "StringValue": str(count)}


def crash_loop_attributes(
    message_id: str, sent_ms: int, taken_back: int, event_id: str | None, body: str
) -> dict[str, Any]:
    """A crash-loop dead letter's attributes: reason, detail, origin.

    The event id too, unless it carries the body's own ip or device id (the body is read for that only).
    """
    attributes: dict[str, Any] = {
        "reason": {"DataType": "String", "StringValue": CRASH_LOOP},
        "reason_detail": {
            "DataType": "String",
            "StringValue": f"moved to the DLQ by SQS's redrive again after {taken_back} take-back(s): "
            "it may crash the ETL; not taken back again",
        },
        "source_message_id": {"DataType": "String", "StringValue": message_id},
    }
    if sent_ms > 0:
        attributes["source_sent_timestamp"] = {"DataType": "Number", "StringValue": str(sent_ms)}
    if event_id and not own_value_in_body(event_id, body, SQS_MAX_MESSAGE_BYTES):
        attributes[EVENT_ID_ATTRIBUTE] = {"DataType": "String", "StringValue": event_id}
    return attributes


def log_crash_loop(message_id: str, taken_back: int) -> None:
    """One warning per crash-loop letter, by message id (never the body)."""
    log.warning(
        "a message the redrive moved to the DLQ again after a take-back is kept there sealed as %s;"
        " the operator decides (dead-letters show / resend)",
        CRASH_LOOP,
        extra={"message_id": message_id, "taken_back": taken_back},
    )


class CrashLoopLetters:
    """The ETL's side of the guard: a crash-looping message sealed and put in the DLQ in place of the original."""

    def __init__(self, client: Any, dlq_url: str, sealer: BodySealer) -> None:
        """On `client` (boto3 SQS), the DLQ at `dlq_url`, sealing with the ETL's dead-letter `sealer`."""
        self._client = client
        self._dlq_url = dlq_url
        self._sealer = sealer

    def seal_in_place(self, dead: DeadLetter) -> None:
        """Replace `dead` in the DLQ by its sealed dead letter, reason `crash_loop`; log it by message id."""
        envelope = self._sealer.seal([dead.raw_body])[0]  # DependencyDown: it stays as it is, tried next time
        attributes = crash_loop_attributes(
            dead.message_id, dead.sent_timestamp_ms, dead.taken_back, dead.producer_event_id, dead.raw_body
        )
        try:
            self._client.send_message(QueueUrl=self._dlq_url, MessageBody=envelope, MessageAttributes=attributes)
            self._client.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=dead.receipt_handle)
        except SQS_ERRORS as error:
            raise_for(error, "dead-letter a crash loop")
        log_crash_loop(dead.message_id, dead.taken_back)
