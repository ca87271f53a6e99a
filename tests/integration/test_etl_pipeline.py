"""The ETL on real SQS (ministack), the vault service and Postgres."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from devstack.events import events_from_file, generate_events, send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from etl_service.domain.messages import QueueMessage
from tests.conftest import RunningVault, etl_harness, running_vault

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
    assert json.loads(dead["Body"]) == raw[12]
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
