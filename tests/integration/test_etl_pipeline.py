"""The ETL on real SQS (ministack), the vault service and Postgres."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from devstack.events import OutgoingEvent, events_from_file, generate_events, send_events
from devstack.procs import free_port
from devstack.sqs import attach_dead_letter_queue, create_queues, sqs_client
from devstack.stack import etl_service_env
from etl_service.adapters.postgres import PostgresLoginStore
from etl_service.adapters.sqs_common import check_queue_pair
from etl_service.domain.messages import QueueMessage, to_row
from etl_service.domain.validation import parse_login_event
from etl_service.service.sealing import SQS_MAX_MESSAGE_BYTES
from tests.conftest import RunningVault, etl_consumer, etl_harness, running_vault
from tests.malformed_samples import MALFORMED, body

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_data.json"


def rows_for(dsn: str, ids: list[str]) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event_id, masked_ip, masked_device_id, app_version, app_version_text, create_date"
            " FROM user_logins WHERE event_id = ANY(%s) ORDER BY event_id",
            (ids,),
        ).fetchall()


def test_exercise_sample_loads_99_rows_and_quarantines_one(stack_env: dict[str, str], vault: RunningVault) -> None:
    events = events_from_file(SAMPLE)
    ids = [e.event_id for e in events]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_harness(stack_env, vault.address) as etl:
        send_events(sqs, etl.queue_url, events)
        summary = etl.wired.consumer.drain()
        dlq = sqs.receive_message(QueueUrl=etl.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    assert (summary.received, summary.loaded, summary.quarantined) == (100, 99, 1)
    rows = rows_for(stack_env["PG_ADMIN_DSN"], ids)
    assert len(rows) == 99
    raw = json.loads(SAMPLE.read_text())
    raw_values = {r.get("ip") for r in raw} | {r.get("device_id") for r in raw}
    assert not raw_values & {v for row in rows for v in row}
    assert all(str(r[1]).startswith("ip_") and str(r[2]).startswith("dev_") for r in rows)
    assert {r[5] for r in rows} == {datetime.now(UTC).date()}
    (dead,) = dlq["Messages"]
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "missing_field"
    assert not [v for k, v in raw[12].items() if k in ("ip", "device_id") and str(v) in dead["Body"]]  # sealed
    assert json.loads(dead["Body"])["format"] == "tokenvault-dead-letter/1"
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantine = conn.execute(
            "SELECT reason, detail FROM etl_quarantine WHERE event_id = %s", (ids[12],)
        ).fetchone()
    assert quarantine is not None and quarantine[0] == "missing_field"


def test_replaying_the_same_events_adds_no_row_and_keeps_tokens(stack_env: dict[str, str], vault: RunningVault) -> None:
    events = events_from_file(SAMPLE)[:20]
    ids = [e.event_id for e in events]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_harness(stack_env, vault.address) as etl:
        send_events(sqs, etl.queue_url, events)
        etl.wired.consumer.drain()
        before = rows_for(stack_env["PG_ADMIN_DSN"], ids)
        send_events(sqs, etl.queue_url, events)  # the replay: new SQS messages, same events
        again = etl.wired.consumer.drain()
    assert again.received == 20 and again.loaded == 0
    assert rows_for(stack_env["PG_ADMIN_DSN"], ids) == before


def test_equal_values_in_different_messages_get_equal_tokens(stack_env: dict[str, str], vault: RunningVault) -> None:
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    base = {"user_id": "u", "app_version": "1.0", "device_type": "ios", "locale": "US", "device_id": "123-45-6789"}
    with etl_harness(stack_env, vault.address) as etl:
        for i, ip in enumerate(["172.16.5.4", "172.16.5.4", "172.16.5.5"]):
            sqs.send_message(QueueUrl=etl.queue_url, MessageBody=json.dumps({**base, "ip": ip, "user_id": f"u{i}"}))
        etl.wired.consumer.drain()
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        tokens = [
            r[0]
            for r in conn.execute(
                "SELECT masked_ip FROM user_logins WHERE user_id IN ('u0', 'u1', 'u2') ORDER BY user_id"
            )
        ]
    assert tokens[0] == tokens[1] != tokens[2]


def test_vault_outage_loses_nothing_and_recovers_when_it_returns(stack_env: dict[str, str]) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens here yet
    events = list(generate_events(10, seed=int(time.time()), malformed_rate=0))
    ids = [e.event_id for e in events]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_harness(stack_env, address, visibility_timeout=2) as etl:
        send_events(sqs, etl.queue_url, events)
        batch: list[QueueMessage] = []
        while len(batch) < 10:
            batch += etl.wired.queue.receive(10, 1)
        outcome = etl.wired.processor.process(batch)
        assert outcome.retried == 10 and outcome.loaded == 0
        assert rows_for(stack_env["PG_ADMIN_DSN"], ids) == []
        with running_vault(stack_env, address=address):
            summary = etl.wired.consumer.drain()
    assert summary.loaded == 10
    assert len(rows_for(stack_env["PG_ADMIN_DSN"], ids)) == 10


def test_every_malformed_class_is_quarantined_while_the_good_messages_of_its_batch_load(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    good = [body(user_id=f"good-{tag}-{i}", ip=f"10.9.{i}.1") for i in range(5)]
    # SQS bodies are Unicode text, so the invalid-UTF-8 class cannot travel through it (unit-tested).
    malformed = [(raw, reason) for raw, reason in MALFORMED if isinstance(raw, str)]
    bodies = [*good, *(raw for raw, _ in malformed)]
    reasons = [reason for _, reason in malformed]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    quarantined_before = {
        r: REGISTRY.get_sample_value("etl_messages_quarantined_total", {"reason": r}) or 0 for r in reasons
    }
    ages_before = REGISTRY.get_sample_value("etl_message_age_seconds_count") or 0
    with etl_harness(stack_env, vault.address, ETL_BATCH_SIZE="100", ETL_MAX_BATCH_AGE_SECONDS="5") as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-{i}", b) for i, b in enumerate(bodies)])
        summary = etl.wired.consumer.drain()
    assert summary.batches <= 2  # good and bad shared their batch
    assert (summary.loaded, summary.quarantined) == (len(good), len(malformed))
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        loaded = conn.execute("SELECT count(*) FROM user_logins WHERE user_id LIKE %s", (f"good-{tag}-%",)).fetchone()
        found: dict[str, str] = dict(
            conn.execute("SELECT event_id, reason FROM etl_quarantine WHERE event_id LIKE %s", (f"{tag}-%",)).fetchall()
        )
    assert loaded == (len(good),)
    assert found == {f"{tag}-{len(good) + i}": reason for i, reason in enumerate(reasons)}
    for reason in set(reasons):
        now = REGISTRY.get_sample_value("etl_messages_quarantined_total", {"reason": reason}) or 0
        assert now - quarantined_before[reason] == reasons.count(reason)
    assert (REGISTRY.get_sample_value("etl_message_age_seconds_count") or 0) - ages_before == len(bodies)


def test_the_heartbeat_keeps_a_slow_batch_invisible_to_other_consumers(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = list(generate_events(10, seed=int(time.time()), malformed_rate=0))
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_harness(stack_env, vault.address, visibility_timeout=2, ETL_BATCH_SIZE="10") as etl:
        slow_write = etl.wired.store.write

        def write(*args: Any) -> Any:
            time.sleep(6)  # three times the 2 s lease
            return slow_write(*args)

        etl.wired.store.write = write  # type: ignore[method-assign,assignment]
        send_events(sqs, etl.queue_url, sent)
        drain = threading.Thread(target=etl.wired.consumer.drain)
        drain.start()
        time.sleep(1)
        stolen = []
        while drain.is_alive():
            stolen += sqs.receive_message(QueueUrl=etl.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
        drain.join()
    assert stolen == []
    assert len(rows_for(stack_env["PG_ADMIN_DSN"], [e.event_id for e in sent])) == 10


def test_an_exercise_style_queue_without_a_dlq_works_with_nothing_but_its_url(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    port = stack_env["SQS_ENDPOINT_URL"].rsplit(":", 1)[1]
    name = f"login-queue-{uuid.uuid4().hex[:8]}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    sqs.create_queue(QueueName=name)  # as the exercise's image has it: no DLQ, no redrive
    queue_url = f"http://localhost:{port}/000000000000/{name}"
    attach_dead_letter_queue(sqs, queue_url)
    events = list(generate_events(5, seed=int(time.time()), malformed_rate=0))
    events.append(OutgoingEvent(f"bad-{name}", '{"foo": "oops_wrong_msg_type", "bar": "123"}'))
    send_events(sqs, queue_url, events)
    env = {**etl_service_env(stack_env), "ETL_QUEUE_URL": queue_url, "ETL_VAULT_ADDRESS": vault.address}
    del env["ETL_SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"]  # both implied by the queue URL
    with etl_consumer(env) as etl:
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined) == (5, 1)
    assert etl.dlq_url.endswith(f"/{name}-dlq")
    dead = sqs.receive_message(QueueUrl=etl.dlq_url, MessageAttributeNames=["All"])["Messages"]
    assert [m["MessageAttributes"]["reason"]["StringValue"] for m in dead] == ["missing_field"]


def test_the_same_event_twice_in_one_batch_loads_one_row(stack_env: dict[str, str], vault: RunningVault) -> None:
    tag = uuid.uuid4().hex[:8]
    twice = OutgoingEvent(f"twice-{tag}", body(user_id=f"twice-{tag}"))
    with etl_harness(stack_env, vault.address, ETL_MAX_BATCH_AGE_SECONDS="3") as etl:
        send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl.queue_url, [twice, twice])
        summary = etl.wired.consumer.drain()
    assert (summary.received, summary.loaded, summary.already_loaded) == (2, 1, 1)
    assert len(rows_for(stack_env["PG_ADMIN_DSN"], [twice.event_id])) == 1


def test_a_partly_loaded_batch_adds_only_the_new_rows(stack_env: dict[str, str]) -> None:
    """The direct COPY meets the loaded events' keys: the batch is merged instead, nothing fails."""
    tag = uuid.uuid4().hex[:8]
    messages = [
        QueueMessage(f"partly-{tag}-{i}", "r", body(user_id=f"u{i}"), 1_700_000_000_000, 1, f"partly-{tag}-{i}")
        for i in range(3)
    ]
    rows = [to_row(m, parse_login_event(m.body), f"ip_tok{i}", f"dev_tok{i}") for i, m in enumerate(messages)]
    with ConnectionPool(stack_env["PG_ETL_DSN"], min_size=1, max_size=1) as pool:
        store = PostgresLoginStore(pool)
        assert store.write(rows[:2], []).rows_inserted == 2
        assert store.write(rows, []).rows_inserted == 1  # a redelivery holding one new event
        assert store.write(rows, []).rows_inserted == 0
    loaded = rows_for(stack_env["PG_ADMIN_DSN"], [m.message_id for m in messages])
    assert [r[0] for r in loaded] == sorted(m.message_id for m in messages)


def test_the_stack_queues_refuse_a_message_over_the_256_kib_the_etl_is_sized_for(stack_env: dict[str, str]) -> None:
    """SQS's default is now 1 MiB; the sealed dead letters, claim bounds and the emulator's budget assume 256 KiB."""
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    queue_url, dlq_url = create_queues(stack_env["SQS_ENDPOINT_URL"], name=f"size-{uuid.uuid4().hex[:8]}")
    for url in (queue_url, dlq_url):
        sqs.send_message(QueueUrl=url, MessageBody="x" * SQS_MAX_MESSAGE_BYTES)  # the largest SQS ever took
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sqs.send_message(QueueUrl=url, MessageBody="x" * (SQS_MAX_MESSAGE_BYTES + 1))
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert str(SQS_MAX_MESSAGE_BYTES) in refused.value.response["Error"]["Message"]


def test_a_queue_left_at_sqs_s_1_mib_default_is_named_at_start(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A production queue made by Terraform keeps SQS's new 1 MiB default unless told: the start says so."""
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    queue_url, dlq_url = create_queues(stack_env["SQS_ENDPOINT_URL"], name=f"sized-{uuid.uuid4().hex[:8]}")
    with caplog.at_level(logging.WARNING, logger="etl_service.adapters.sqs_common"):
        check_queue_pair(sqs, queue_url, dlq_url)
        assert not caplog.records  # the stack's queues are sized as the ETL is
        sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MaximumMessageSize": "1048576"})
        check_queue_pair(sqs, queue_url, dlq_url)
    assert [
        (r.levelname, getattr(r, "setting", None), getattr(r, "maximum_message_size", None)) for r in caplog.records
    ] == [("WARNING", "ETL_DLQ_URL", 1048576)]
