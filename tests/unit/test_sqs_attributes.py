"""Message attributes anyone who may send to a queue sets: parsed without raising, believed only when sane.

`tokenvault_sent_timestamp` (the original time of a message `dead-letters resend` re-sent) and
the DLQ's `source_sent_timestamp`, `reason`, `reason_detail` and bodies (attack round 6, Break 1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl_service.adapters.dead_letter import to_dead_letter
from etl_service.adapters.dead_letter_queue import _resend_attributes
from etl_service.adapters.sqs import REDRIVE_LIMIT_READ_SECONDS, SqsQueue, _to_message
from etl_service.adapters.sqs_common import (
    MAX_TIMESTAMP_MS,
    RESENT_MAX_AGE_MS,
    SENT_TIMESTAMP_ATTRIBUTE,
    claimed_sent_ms,
    timestamp_ms,
)
from etl_service.adapters.sqs_resent_times import believed_sent_times
from etl_service.domain.messages import MAX_EVENT_ID_LENGTH, QueueMessage, quarantine_record
from etl_service.domain.resent_times import RESENT_FROM_ATTRIBUTE, SENT_TIME_TAG_ATTRIBUTE, tag_input
from etl_service.entrypoints.dead_letters import _shown
from etl_service.errors import DependencyDown
from etl_service.service.sealing import dead_letter_body, read_dead_letter_body

SQS_SENT_MS = 1_796_292_000_000  # 2026-12-03T10:00:00Z, SQS's own SentTimestamp of the copy
DAY_MS = 24 * 3600 * 1000


WELL_FORMED_TAG = "vault:v1:" + "A" * 43 + "="


class Verifier:
    """A fake Transit `verify`: answers `valid` for every claim, and records what it was asked."""

    def __init__(self, valid: bool) -> None:
        self.valid = valid
        self.asked: list[tuple[bytes, str]] = []

    def verify_tags(self, claims: Sequence[tuple[bytes, str]]) -> list[bool]:
        self.asked += claims
        return [self.valid] * len(claims)


def raw_message(claimed: Any = None, sqs_sent: Any = str(SQS_SENT_MS), **attributes: Any) -> dict[str, Any]:
    message_attributes = dict(attributes)
    if claimed is not None:
        message_attributes[SENT_TIMESTAMP_ATTRIBUTE] = {"DataType": "Number", "StringValue": claimed}
        message_attributes[SENT_TIME_TAG_ATTRIBUTE] = {"DataType": "String", "StringValue": WELL_FORMED_TAG}
        message_attributes[RESENT_FROM_ATTRIBUTE] = {"DataType": "String", "StringValue": "d-1"}
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": "{}",
        "Attributes": {"SentTimestamp": sqs_sent, "ApproximateReceiveCount": "2"},
        "MessageAttributes": message_attributes,
    }


@pytest.mark.parametrize(
    "claimed",
    [
        "999999999999999",  # year 33658: no datetime holds it (the poison of Break 1)
        str(MAX_TIMESTAMP_MS + 1),
        "1000",  # 1970-01-01: a producer backdating its event
        "0",
        str(SQS_SENT_MS + 1),  # after SQS accepted the copy: not an original time
        str(SQS_SENT_MS - RESENT_MAX_AGE_MS - 1),  # older than the DLQ keeps anything
        "-5",
        "1e12",
        "1796292000000".translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)}),  # fullwidth digits
        "",
        "203.0.113.7",
        "9" * 40,
    ],
)
def test_a_claimed_sent_time_outside_the_dlq_retention_before_sqs_own_is_ignored(claimed: str) -> None:
    raw, verifier = raw_message(claimed), Verifier(valid=True)
    message = _to_message(raw, believed_sent_times([raw], verifier))
    assert message.sent_timestamp_ms == SQS_SENT_MS
    assert message.sent_at == datetime(2026, 12, 3, 10, tzinfo=UTC)
    assert verifier.asked == []  # no time, no question to Transit


@pytest.mark.parametrize("age_ms", [0, 1, DAY_MS, RESENT_MAX_AGE_MS])
def test_a_claimed_sent_time_within_the_dlq_retention_is_the_original_time_once_its_tag_verifies(age_ms: int) -> None:
    raw = raw_message(str(SQS_SENT_MS - age_ms))
    assert _to_message(raw, believed_sent_times([raw], Verifier(valid=True))).sent_timestamp_ms == SQS_SENT_MS - age_ms
    assert _to_message(raw, believed_sent_times([raw], Verifier(valid=False))).sent_timestamp_ms == SQS_SENT_MS
    assert _to_message(raw, believed_sent_times([raw], None)).sent_timestamp_ms == SQS_SENT_MS  # no Transit


def test_the_tag_is_asked_about_this_message_s_event_id_time_and_body() -> None:
    raw = raw_message(str(SQS_SENT_MS - DAY_MS), event_id={"DataType": "String", "StringValue": "e-1"})
    verifier = Verifier(valid=True)
    believed_sent_times([raw], verifier)
    assert verifier.asked == [(tag_input("d-1", "e-1", SQS_SENT_MS - DAY_MS, "{}"), WELL_FORMED_TAG)]
    assert tag_input("d-1", "e-1", 1, "{}") not in {
        tag_input("d-2", "e-1", 1, "{}"),
        tag_input("d-1", "e-2", 1, "{}"),
        tag_input("d-1", "e-1", 2, "{}"),
        tag_input("d-1", "e-1", 1, "{ }"),
    }


@pytest.mark.parametrize("tag", [None, "", "vault:v1:short=", "vault:v0:" + "A" * 43 + "=", "x" * 60])
def test_a_claimed_time_without_a_well_formed_tag_is_ignored_unasked(tag: str | None) -> None:
    raw = raw_message(str(SQS_SENT_MS - DAY_MS))
    if tag is None:
        del raw["MessageAttributes"][SENT_TIME_TAG_ATTRIBUTE]
    else:
        raw["MessageAttributes"][SENT_TIME_TAG_ATTRIBUTE]["StringValue"] = tag
    verifier = Verifier(valid=True)
    assert believed_sent_times([raw], verifier) == {}
    assert verifier.asked == []


def test_an_ignored_claim_is_logged_with_the_message_id_only(caplog: pytest.LogCaptureFixture) -> None:
    raw = raw_message("203.0.113.7")
    _to_message(raw, believed_sent_times([raw], Verifier(valid=True)))
    assert "203.0.113.7" not in caplog.text
    assert [r.message_id for r in caplog.records] == ["m-1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "odd",
    [
        {SENT_TIMESTAMP_ATTRIBUTE: {"DataType": "Binary", "BinaryValue": b"\x00"}},
        {SENT_TIMESTAMP_ATTRIBUTE: {"DataType": "Number"}},
        {SENT_TIMESTAMP_ATTRIBUTE: "not a dict"},
        {"event_id": {"DataType": "Binary", "BinaryValue": b"e"}},
    ],
)
def test_attributes_of_any_shape_never_stop_a_receive(odd: dict[str, Any]) -> None:
    message = _to_message(raw_message(**odd))
    assert (message.sent_timestamp_ms, message.event_id) == (SQS_SENT_MS, None)


@pytest.mark.parametrize("sqs_sent", [None, "", "x", "999999999999999"])
def test_without_a_usable_sqs_sent_timestamp_the_receive_time_is_used(sqs_sent: Any) -> None:
    before = datetime.now(UTC)
    message = _to_message(raw_message("1000", sqs_sent=sqs_sent))
    assert before.timestamp() - 1 <= message.sent_timestamp_ms / 1000 <= datetime.now(UTC).timestamp() + 1


def test_a_receive_count_that_is_no_number_reads_as_one() -> None:
    raw = raw_message()
    raw["Attributes"]["ApproximateReceiveCount"] = "many"
    assert _to_message(raw).receive_count == 1


@given(st.text(max_size=20), st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS))
def test_timestamp_parsing_never_raises_and_stays_within_datetime(text: str, sqs_sent: int) -> None:
    value = timestamp_ms(text)
    assert value is None or 0 < value <= MAX_TIMESTAMP_MS
    claimed = claimed_sent_ms(text, sqs_sent)
    assert claimed is None or sqs_sent - RESENT_MAX_AGE_MS <= claimed <= sqs_sent


def test_a_quarantine_record_is_built_even_for_a_timestamp_no_datetime_holds() -> None:
    poison = QueueMessage("m-9", "r-9", "{}", 999_999_999_999_999, 5, "evt-9")
    with pytest.raises((ValueError, OverflowError)):
        _ = poison.sent_at
    record = quarantine_record(poison, "processing_failed", "detail")
    assert (record.event_id, record.sqs_message_id, record.sent_at) == ("evt-9", "m-9", None)


def dead_raw(body: str = "{}", **attributes: str) -> dict[str, Any]:
    return {
        "MessageId": "d-1",
        "ReceiptHandle": "r-1",
        "Body": body,
        "Attributes": {"SentTimestamp": str(SQS_SENT_MS)},
        "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    }


@pytest.mark.parametrize(
    "attributes",
    [
        {"source_sent_timestamp": "999999999999999"},
        {SENT_TIMESTAMP_ATTRIBUTE: "999999999999999"},
        {"source_sent_timestamp": "999999999999999", SENT_TIMESTAMP_ATTRIBUTE: "999999999999999"},
        {"source_sent_timestamp": "x", SENT_TIMESTAMP_ATTRIBUTE: ""},
    ],
)
def test_a_dead_letter_with_a_sent_time_that_is_no_time_lists_sqs_own(attributes: dict[str, str]) -> None:
    dead = to_dead_letter(dead_raw(**attributes))
    assert dead.sent_at == "2026-12-03T10:00:00+00:00"


def test_a_dead_letter_without_any_time_lists_as_unknown_and_is_resent_without_one() -> None:
    raw = dead_raw(reason="missing_field")
    raw["Attributes"] = {}
    dead = to_dead_letter(raw)
    assert dead.sent_at == "unknown"
    assert SENT_TIMESTAMP_ATTRIBUTE not in _resend_attributes(dead, "{}", lambda data: WELL_FORMED_TAG)


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,  # deeper than the json module's recursion limit
        json.dumps({"format": "tokenvault-dead-letter/1", "sealed_body": 5, "key": ["k"], "note": {"a": 1}}),
        json.dumps(["tokenvault-dead-letter/1"]),
        "\udcff",
    ],
)
def test_dead_letter_bodies_of_any_shape_never_stop_a_listing(body: str) -> None:
    dead = to_dead_letter(dead_raw(body, reason="missing_field"))
    assert (dead.sealed_body, dead.key, dead.note) == (None, None, None)


def test_a_sealed_envelope_still_reads_as_one() -> None:
    assert read_dead_letter_body(dead_letter_body("vault:v1:abc", None, "k")) == {
        "sealed_body": "vault:v1:abc",
        "key": "k",
        "note": None,
        "minted_tokens": None,  # an envelope without the field (every one sealed before attack 35, N9)
    }
    assert read_dead_letter_body(dead_letter_body("vault:v1:abc", None, "k", "vault:v1:def")) == {
        "sealed_body": "vault:v1:abc",
        "key": "k",
        "note": None,
        "minted_tokens": "vault:v1:def",
    }


def test_attribute_text_cannot_forge_listing_lines_or_drive_the_terminal() -> None:
    assert _shown("reason\n00000000-fake  missing_field\x1b[2J\u202e") == "reason?00000000-fake  missing_field?[2J?"


def test_a_resend_vouches_for_the_time_with_a_new_tag_or_carries_its_own_with_its_own_body_only() -> None:
    """`resend` of a sealed letter tags its time; a take-back carries a tag only with the body it was made for."""
    sealed = to_dead_letter(dead_raw(reason="processing_failed", source_sent_timestamp=str(SQS_SENT_MS - DAY_MS)))
    tagged = _resend_attributes(sealed, "{}", lambda data: WELL_FORMED_TAG)
    assert {name: value["StringValue"] for name, value in tagged.items() if name != "event_id"} == {
        SENT_TIMESTAMP_ATTRIBUTE: str(SQS_SENT_MS - DAY_MS),
        SENT_TIME_TAG_ATTRIBUTE: WELL_FORMED_TAG,
        RESENT_FROM_ATTRIBUTE: "d-1",
    }
    assert list(_resend_attributes(sealed, "{}")) == ["event_id"]  # no tag, no time: SQS's date applies
    carried = {SENT_TIMESTAMP_ATTRIBUTE: str(SQS_SENT_MS - DAY_MS), SENT_TIME_TAG_ATTRIBUTE: WELL_FORMED_TAG}
    redriven = to_dead_letter(dead_raw("{}", **carried, **{RESENT_FROM_ATTRIBUTE: "d-0"}))
    assert _resend_attributes(redriven, "{}")[SENT_TIME_TAG_ATTRIBUTE]["StringValue"] == WELL_FORMED_TAG
    assert list(_resend_attributes(redriven, '{"fixed": 1}')) == ["event_id"]


class DownVerifier:
    """A Transit `verify` that cannot be reached."""

    def verify_tags(self, claims: Sequence[tuple[bytes, str]]) -> list[bool]:
        raise DependencyDown("OpenBao unavailable", "openbao")


class Receives:
    """An SQS client answering one receive with the messages given; records visibility changes.

    Its source queue's redrive limit is `redrive_limit` (None: no redrive policy), read as SqsQueue.redrive_limit
    reads it.
    """

    def __init__(self, messages: list[dict[str, Any]], redrive_limit: int | None = 5) -> None:
        self.messages = messages
        self.visibility: dict[str, int] = {}
        self.redrive_limit = redrive_limit

    def get_queue_attributes(self, AttributeNames: list[str], **_: Any) -> dict[str, Any]:
        if self.redrive_limit is None:
            return {"Attributes": {}}
        policy = {"deadLetterTargetArn": "arn:aws:sqs:r:1:dlq", "maxReceiveCount": self.redrive_limit}
        return {"Attributes": {"RedrivePolicy": json.dumps(policy)}}

    def receive_message(self, **call: Any) -> dict[str, Any]:
        return {"Messages": self.messages}

    def change_message_visibility_batch(self, Entries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        self.visibility.update((e["ReceiptHandle"], e["VisibilityTimeout"]) for e in Entries)
        return {}


def _received(count: int, message_id: str = "m-1", **claim: Any) -> dict[str, Any]:
    raw = raw_message(str(SQS_SENT_MS - DAY_MS), **claim)
    return {
        **raw,
        "MessageId": message_id,
        "ReceiptHandle": f"r-{message_id}",
        "Attributes": {**raw["Attributes"], "ApproximateReceiveCount": str(count)},
    }


def test_with_openbao_down_only_messages_claiming_a_re_sent_time_wait() -> None:
    """Their date cannot be decided: postponed, the longer the more receives they spent; the rest goes on."""
    plain = {**raw_message(), "MessageId": "m-9", "ReceiptHandle": "r-m-9"}
    client = Receives([_received(1, "m-1"), _received(3, "m-3"), plain])
    queue = SqsQueue(client, "source", "dlq", visibility_seconds=60, verifier=DownVerifier())  # type: ignore[arg-type]
    queue.max_receive_count = 5
    assert [m.message_id for m in queue.receive(10, 0)] == ["m-9"]
    assert client.visibility == {"r-m-1": 60, "r-m-3": 240}  # not the lease again: receives climb slowly


def test_with_openbao_down_a_claiming_message_on_its_last_receive_goes_on_dated_by_sqs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review 20, R20-11: dropped from every receive, it was redriven to the DLQ in clear after 5 of them."""
    client = Receives([_received(5, "m-5")])
    queue = SqsQueue(client, "source", "dlq", verifier=DownVerifier())  # type: ignore[arg-type]
    queue.max_receive_count = 5
    [message] = queue.receive(10, 0)
    assert message.message_id == "m-5" and message.sent_timestamp_ms == SQS_SENT_MS and not client.visibility
    assert [getattr(r, "message_id", None) for r in caplog.records if "last receive" in r.getMessage()] == ["m-5"]


def test_with_openbao_down_a_claim_no_tag_could_vouch_for_does_not_wait() -> None:
    """No Transit call would be made for it: it is dated by SQS as always, beside a claim that waits."""
    untagged = {
        **_received(1, "m-2"),
        "MessageAttributes": {SENT_TIMESTAMP_ATTRIBUTE: {"StringValue": str(SQS_SENT_MS - DAY_MS)}},
    }
    client = Receives([_received(1), untagged])
    queue = SqsQueue(client, "source", "dlq", verifier=DownVerifier())  # type: ignore[arg-type]
    assert [(m.message_id, m.sent_timestamp_ms) for m in queue.receive(10, 0)] == [("m-2", SQS_SENT_MS)]
    assert list(client.visibility) == ["r-m-1"]


def test_a_claim_over_an_event_id_longer_than_any_accepted_is_not_sent_to_transit_nor_waits() -> None:
    """Review 22, R22-9: a 600 KB event id made a `verify` item over OpenBao's 2 MiB bound (413: "unavailable")."""
    poison = _received(1, "m-big", event_id={"DataType": "String", "StringValue": "é" * 300_000})
    genuine = _received(1, "m-ok", event_id={"DataType": "String", "StringValue": "e" * MAX_EVENT_ID_LENGTH})
    verifier = Verifier(valid=True)
    assert believed_sent_times([poison, genuine], verifier) == {"m-ok": SQS_SENT_MS - DAY_MS}
    assert [len(data) for data, _ in verifier.asked] == [len(tag_input("d-1", "e" * 128, SQS_SENT_MS - DAY_MS, "{}"))]
    client = Receives([poison])
    queue = SqsQueue(client, "source", "dlq", verifier=DownVerifier())  # type: ignore[arg-type]
    assert [(m.message_id, m.sent_timestamp_ms) for m in queue.receive(10, 0)] == [("m-big", SQS_SENT_MS)]
    assert not client.visibility


def test_the_redrive_limit_is_read_again_where_a_message_s_fate_depends_on_it() -> None:
    """Attack 44 on b696ca0: read once at start, a limit lowered meanwhile made a real last receive look early."""
    client = Receives([_received(2, "m-2")], redrive_limit=5)
    queue = SqsQueue(client, "source", "dlq", verifier=DownVerifier())  # type: ignore[arg-type]
    assert queue.redrive_limit() == 5
    client.redrive_limit = 2  # lowered while the ETL runs
    assert queue.redrive_limit() == 5  # asked again within REDRIVE_LIMIT_READ_SECONDS: the last one read
    queue._limit_read_at -= REDRIVE_LIMIT_READ_SECONDS
    [message] = queue.receive(10, 0)  # OpenBao down: on its (now) last receive it goes on, dated by SQS
    assert message.message_id == "m-2" and not client.visibility and queue.max_receive_count == 2
