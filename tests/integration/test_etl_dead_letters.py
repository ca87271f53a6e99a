"""The DLQ on real SQS: every message there has a reason and a quarantine row, and no PII in clear."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg

from devstack.events import OutgoingEvent, generate_events, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_harness
from tests.malformed_samples import GOOD, body


def all_dead_letters(endpoint: str, dlq_url: str) -> list[dict[str, Any]]:
    sqs = sqs_client(endpoint)
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
    ).get("Messages", []):
        found += [dict(m) for m in batch]
    return found


def test_the_dlq_holds_no_raw_ip_or_device_id_in_bodies_or_attributes(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = list(generate_events(300, seed=time.time_ns() % 2**32, malformed_rate=0.3))
    raw_values = set()
    for event in sent:
        try:
            document = json.loads(event.body)
        except ValueError:
            continue
        raw_values |= {str(document[k]) for k in ("ip", "device_id") if isinstance(document, dict) and k in document}
    with etl_harness(stack_env, vault.address) as etl:
        send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl.queue_url, sent)
        summary = etl.wired.consumer.drain()
    dead = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    assert len(dead) == summary.quarantined > 30
    texts = [m["Body"] + json.dumps(m["MessageAttributes"]) for m in dead]
    leaked = [v for v in raw_values if any(v in text for text in texts)]
    assert leaked == []
    assert all(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)


def test_a_long_event_id_deep_nesting_and_a_huge_integer_are_quarantined_with_reasons_and_odd_good_events_load(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    odd_good = body(user_id=f"odd-{tag}")[:-1] + ', "x": [[[{"y": null}]]], "n": ' + "7" * 4000 + ', "f": 1e999}'
    deep = body(user_id=f"deep-{tag}")[:-1] + ', "x": ' + "[" * 2000 + "]" * 2000 + "}"
    huge = body(user_id=f"huge-{tag}")[:-1] + ', "n": ' + "9" * 5000 + "}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_harness(stack_env, vault.address) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-odd", odd_good), OutgoingEvent(f"{tag}-deep", deep)])
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-huge", huge)])
        long_id = sqs.send_message(
            QueueUrl=etl.queue_url,
            MessageBody=body(user_id=f"long-{tag}"),
            MessageAttributes={"event_id": {"DataType": "String", "StringValue": "e" * 200}},
        )["MessageId"]
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined, summary.retried) == (1, 3, 0)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        reasons: dict[str, str] = dict(
            conn.execute(
                "SELECT event_id, reason FROM etl_quarantine WHERE event_id = ANY(%s)",
                ([f"{tag}-deep", f"{tag}-huge", long_id],),
            ).fetchall()
        )
        loaded = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = %s", (f"{tag}-odd",)).fetchone()
    assert reasons == {f"{tag}-deep": "too_deep", f"{tag}-huge": "number_too_large", long_id: "invalid_event_id"}
    assert loaded == (1,)
    dead = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    assert sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead) == sorted(reasons.values())
    assert not [m for m in dead if GOOD["ip"] in m["Body"] or GOOD["device_id"] in m["Body"]]
