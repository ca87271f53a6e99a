"""The largest attributes the ETL writes on a dead letter fit the room sealing.py leaves for them.

SQS refuses a message whose body and attributes together pass 256 KiB, counting each attribute's
name, data type and value in UTF-8 bytes. sealing.py keeps DEAD_LETTER_ATTRIBUTES_RESERVE_BYTES of
that for the attributes, a figure worked out by hand from what SqsQueue.dead_letter writes: an
attribute added there, or a bound raised, could pass it unnoticed, and then the largest sealed
envelope (MAX_ENVELOPE_BYTES) would be refused by SQS and its message stay in the source queue.

Here the attributes come from the real code path: the message as SqsQueue receives it (`_to_message`:
its event id checked by check_event_id, its sent time by timestamp_ms), a reason and detail as the
batch gives them, and SqsQueue.dead_letter's own send_message call, captured. Every value at the
longest the code lets through: the longest reason the ETL dead-letters with (KNOWN_REASONS), a
detail longer than the 1,000 characters dead_letter keeps, of 4-byte characters (the widest UTF-8
has, allowed in SQS attribute values), an event id of MAX_EVENT_ID_LENGTH such characters, a
message id as SQS issues it (a UUID; returned_letters keeps only that shape of an original's id),
and the latest sent time the ETL believes (MAX_TIMESTAMP_MS). Not against ministack: it counts a
message's body only, so it would accept what SQS refuses.
"""

from __future__ import annotations

import uuid
from typing import Any

from etl_service.adapters.sqs import SqsQueue, _to_message
from etl_service.adapters.sqs_common import EVENT_ID_ATTRIBUTE, MAX_TIMESTAMP_MS
from etl_service.domain.messages import DEAD_LETTER_ATTRIBUTES, MAX_EVENT_ID_LENGTH
from etl_service.service.returned_letters import KNOWN_REASONS
from etl_service.service.sealing import (
    DEAD_LETTER_ATTRIBUTES_RESERVE_BYTES,
    MAX_ENVELOPE_BYTES,
    MINTED_FIELD_MAX_BYTES,
    SQS_MAX_MESSAGE_BYTES,
    dead_letter_body,
    longest_written_claim_chars,
)
from tests.unit.dlq_clients import DLQ, SOURCE

WIDEST = "\U0001f600"
"""A character of 4 UTF-8 bytes, the most UTF-8 spends on one (SQS allows #x10000 to #x10FFFF in values)."""
KEY = "tokenvault-dead-letters"


class SentToDlq:
    """An SQS client keeping what SqsQueue.dead_letter sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **call: Any) -> dict[str, Any]:
        assert call["QueueUrl"] == DLQ
        self.sent.append(call)
        return {"MessageId": str(uuid.uuid4())}


def sqs_counted_bytes(attributes: dict[str, dict[str, str]]) -> int:
    """What SQS counts of message attributes towards its limit: name, data type and value, in UTF-8."""
    return sum(
        len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


def largest_dead_letter() -> dict[str, Any]:
    """The send_message call of the largest dead letter the ETL can write, as SqsQueue.dead_letter makes it."""
    received = _to_message(
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "h-1",
            "Body": "{}",
            "Attributes": {"SentTimestamp": str(MAX_TIMESTAMP_MS), "ApproximateReceiveCount": "1"},
            "MessageAttributes": {
                EVENT_ID_ATTRIBUTE: {"DataType": "String", "StringValue": WIDEST * MAX_EVENT_ID_LENGTH}
            },
        }
    )
    assert received.event_id == WIDEST * MAX_EVENT_ID_LENGTH, received.event_id_problem  # the ETL keeps it
    assert received.sent_timestamp_ms == MAX_TIMESTAMP_MS
    largest_envelope = dead_letter_body(
        "vault:v1:" + "A" * (longest_written_claim_chars(KEY) - len("vault:v1:")), None, KEY
    )
    assert len(largest_envelope.encode()) == MAX_ENVELOPE_BYTES
    client = SentToDlq()
    queue = SqsQueue(client, SOURCE, DLQ)  # type: ignore[arg-type]
    queue.dead_letter(received, max(KNOWN_REASONS, key=len), WIDEST * 2_000, largest_envelope)
    [call] = client.sent
    return call


def test_the_largest_attributes_the_etl_writes_fit_the_reserve() -> None:
    call = largest_dead_letter()
    attributes = call["MessageAttributes"]
    assert set(attributes) == {*DEAD_LETTER_ATTRIBUTES, EVENT_ID_ATTRIBUTE}  # each of them at its longest
    assert len(attributes["reason_detail"]["StringValue"].encode()) == 1_000 * len(WIDEST.encode()) == 4_000
    counted = sqs_counted_bytes(attributes)
    assert counted <= DEAD_LETTER_ATTRIBUTES_RESERVE_BYTES, (
        f"a dead letter's attributes can take {counted} bytes as SQS counts them, more than the"
        f" {DEAD_LETTER_ATTRIBUTES_RESERVE_BYTES} sealing.py reserves: raise the reserve"
    )
    assert len(call["MessageBody"].encode()) + counted <= SQS_MAX_MESSAGE_BYTES  # the largest envelope still sent


def test_the_largest_envelope_with_its_minted_tokens_and_the_largest_attributes_fit_one_sqs_message() -> None:
    """An envelope may carry `minted_tokens` beyond MAX_ENVELOPE_BYTES (attack 35, N9): the reserve's rest holds it."""
    call = largest_dead_letter()
    counted = sqs_counted_bytes(call["MessageAttributes"])
    assert MAX_ENVELOPE_BYTES + MINTED_FIELD_MAX_BYTES + counted <= SQS_MAX_MESSAGE_BYTES
