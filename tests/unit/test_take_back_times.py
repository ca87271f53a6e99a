"""A take-back vouches for the SentTimestamp SQS kept on the DLQ copy, never for one a sender claims (R20-13).

Before, a take-back sent an original SQS's redrive moved back with no time: it loaded under the
take-back's date. The ETL now tags the DLQ copy's SentTimestamp (SQS's system attribute) with its
own Transit key; here the key is a local HMAC, over the fake SQS client of the crash-loop tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import pytest

from etl_service.adapters.sqs import SqsQueue
from etl_service.adapters.sqs_resent_times import believed_sent_times
from etl_service.domain.resent_times import RESENT_FROM_ATTRIBUTE, SENT_TIME_TAG_ATTRIBUTE, tag_input
from etl_service.errors import DependencyDown
from tests.unit.test_take_back_crash_loop import DLQ, EVENT, SOURCE, Queues

TEN_DAYS_MS = 10 * 24 * 3600 * 1000


class TakeBackKey:
    """The ETL's take-back key as Transit would use it: `tag` (hmac) and `verify_tags`; records what it tagged."""

    def __init__(self) -> None:
        self.tagged: list[bytes] = []

    def tag(self, inputs: Sequence[bytes]) -> list[str]:
        self.tagged += inputs
        return [self._hmac(data) for data in inputs]

    def verify_tags(self, claims: Sequence[tuple[bytes, str]]) -> list[bool]:
        return [hmac.compare_digest(self._hmac(data), tag) for data, tag in claims]

    @staticmethod
    def _hmac(data: bytes) -> str:
        return "vault:v1:" + base64.b64encode(hmac.new(b"take-back key", data, hashlib.sha256).digest()).decode()


def _string(value: str, data_type: str = "String") -> dict[str, str]:
    return {"DataType": data_type, "StringValue": value}


def _attribute(message: dict[str, Any], name: str) -> str | None:
    value = message["MessageAttributes"].get(name)
    return value["StringValue"] if value else None


def test_a_take_back_tags_the_sent_timestamp_sqs_kept_not_a_time_the_producer_claims() -> None:
    client, key = Queues(), TakeBackKey()
    client.put(DLQ, EVENT, {"event_id": _string("evt-1")})  # the redrive moved it: no reason, SQS's time kept
    [letter] = client.queues[DLQ]
    kept_ms = int(letter["Attributes"]["SentTimestamp"])
    claimed = str(kept_ms - TEN_DAYS_MS)  # times a producer set, untagged: never what the take-back vouches for
    letter["MessageAttributes"] |= {
        "source_sent_timestamp": _string(claimed, "Number"),
        "tokenvault_sent_timestamp": _string(claimed, "Number"),
    }
    queue = SqsQueue(client, SOURCE, DLQ, take_back_tagger=key.tag)  # type: ignore[arg-type]
    assert queue.take_back_redriven().taken == 1
    [copy] = client.queues[SOURCE]
    assert key.tagged == [tag_input(letter["MessageId"], "evt-1", kept_ms, EVENT)]
    assert _attribute(copy, "tokenvault_sent_timestamp") == str(kept_ms)
    assert _attribute(copy, RESENT_FROM_ATTRIBUTE) == letter["MessageId"]
    assert believed_sent_times([copy], key) == {copy["MessageId"]: kept_ms}  # the ETL believes it on receipt


def test_a_letter_carrying_a_tagged_time_keeps_it_and_a_failing_tagger_sends_nothing() -> None:
    client, key = Queues(), TakeBackKey()
    resent_tag = "vault:v1:" + base64.b64encode(bytes(32)).decode()  # `dead-letters resend`'s, moved by the redrive
    carried = {
        "event_id": _string("evt-2"),
        "tokenvault_sent_timestamp": _string("1733000000000", "Number"),
        SENT_TIME_TAG_ATTRIBUTE: _string(resent_tag),
        RESENT_FROM_ATTRIBUTE: _string("letter-0"),
    }
    client.put(DLQ, EVENT, carried)
    assert SqsQueue(client, SOURCE, DLQ, take_back_tagger=key.tag).take_back_redriven().taken == 1  # type: ignore[arg-type]
    [copy] = client.queues[SOURCE]
    assert key.tagged == [] and _attribute(copy, SENT_TIME_TAG_ATTRIBUTE) == resent_tag

    def down(_: Sequence[bytes]) -> list[str]:
        raise DependencyDown("OpenBao unavailable", "openbao")

    client.queues[SOURCE] = []
    client.put(DLQ, EVENT, {"event_id": _string("evt-3")})
    with pytest.raises(DependencyDown):
        SqsQueue(client, SOURCE, DLQ, take_back_tagger=down).take_back_redriven()  # type: ignore[arg-type]
    assert client.queues[SOURCE] == [] and len(client.queues[DLQ]) == 1  # nothing sent: it stays for the next


def test_a_letter_whose_event_id_is_longer_than_any_accepted_goes_back_untagged() -> None:
    """Review 22, R22-9: its tag input could exceed OpenBao's request bound; it is refused on return anyway."""
    client, key = Queues(), TakeBackKey()
    client.put(DLQ, EVENT, {"event_id": _string("é" * 300_000)})
    client.put(DLQ, EVENT, {"event_id": _string("evt-4")})
    assert SqsQueue(client, SOURCE, DLQ, take_back_tagger=key.tag).take_back_redriven().taken == 2  # type: ignore[arg-type]
    assert [len(data) < 1024 for data in key.tagged] == [True]
    assert sorted(_attribute(copy, RESENT_FROM_ATTRIBUTE) is None for copy in client.queues[SOURCE]) == [False, True]
