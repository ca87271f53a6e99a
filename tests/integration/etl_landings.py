"""Events through the ETL on the real stack, and where each of them landed.

Shared by the ETL's recovery, shutdown, drain, start and crash-loop tests: `events` makes a
batch of generated events (some malformed), `where_each_event_landed` and
`assert_each_event_landed_once` make the check a data team would make (every sent event in
user_logins or in the quarantine exactly once, the DLQ holding exactly the quarantined ones),
`queue_depth` counts what a queue still holds and `drained_within` fails a drain that loops.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from devstack.events import OutgoingEvent, generate_events
from devstack.sqs import sqs_client
from etl_service.domain.validation import Rejection, parse_login_event
from etl_service.service.outcomes import RunSummary
from tests.conftest import EtlHarness


def events(count: int, malformed_rate: float = 0.1) -> list[OutgoingEvent]:
    """`count` generated events, about `malformed_rate` of them malformed, from a fresh seed."""
    return list(generate_events(count, seed=time.time_ns() % 2**32, malformed_rate=malformed_rate))


def is_valid(event: OutgoingEvent) -> bool:
    """Whether the ETL loads `event` (else it quarantines it)."""
    try:
        parse_login_event(event.body)
    except Rejection:
        return False
    return True


def where_each_event_landed(dsn: str, sent: list[OutgoingEvent]) -> tuple[list[str], list[str]]:
    """(event ids in user_logins, event ids in the quarantine), duplicates kept."""
    ids = [e.event_id for e in sent]
    with psycopg.connect(dsn) as conn:
        rows = [r[0] for r in conn.execute("SELECT event_id FROM user_logins WHERE event_id = ANY(%s)", (ids,))]
        quarantined = [
            r[0] for r in conn.execute("SELECT event_id FROM etl_quarantine WHERE event_id = ANY(%s)", (ids,))
        ]
    return rows, quarantined


def assert_each_event_landed_once(dsn: str, sent: list[OutgoingEvent], endpoint: str, dlq_url: str) -> None:
    """Each valid event loaded once, each other one quarantined, and the DLQ holding the quarantined ones."""
    rows, quarantined = where_each_event_landed(dsn, sent)
    assert len(rows) == len(set(rows)), "an event was loaded twice"
    assert sorted(rows) == sorted(e.event_id for e in sent if is_valid(e))
    assert sorted(quarantined) == sorted(e.event_id for e in sent if not is_valid(e))
    dead = dead_letters(endpoint, dlq_url)
    assert all(reason for _, reason in dead), "a message was redriven to the DLQ (receive count exhausted)"
    assert {event_id for event_id, _ in dead} == set(quarantined)


def dead_letters(endpoint: str, dlq_url: str) -> list[tuple[str, str | None]]:
    """(event_id, reason) of each DLQ message; reason is None for messages SQS redrove itself."""
    sqs = sqs_client(endpoint)
    found: list[tuple[str, str | None]] = []
    while batch := sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
    ).get("Messages", []):
        for message in batch:
            attributes = message.get("MessageAttributes", {})
            reason = attributes.get("reason")
            found.append((attributes["event_id"]["StringValue"], reason["StringValue"] if reason else None))
    return found


def queue_depth(endpoint: str, queue_url: str) -> int:
    """The messages the queue holds, visible or leased."""
    attributes = sqs_client(endpoint).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def drained_within(etl: EtlHarness, seconds: float) -> RunSummary:
    """The drain's summary; fails the test when it does not end in time (a message that loops)."""
    summaries: list[RunSummary] = []
    drain = threading.Thread(target=lambda: summaries.append(etl.wired.consumer.drain()), daemon=True)
    drain.start()
    drain.join(seconds)
    if drain.is_alive():
        etl.wired.consumer.stop()
        drain.join(60)
        pytest.fail(f"the drain did not end within {seconds} s: a message loops between the queue and the DLQ")
    return summaries[0]
