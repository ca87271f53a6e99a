"""A re-sent dead letter keeps its original date only with the DLQ operator's Transit HMAC over it (real stack).

Until 4 Dec any queue writer could set `tokenvault_sent_timestamp` and backdate its own event by
up to the DLQ's 14 days' retention (an accepted risk of docs/threat-model.md). `dead-letters
resend` now tags the time, the dead letter, the event id and the body with the operator's token
(`transit/hmac`); the ETL believes the time only when Transit verifies the tag.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.sqs import sqs_client
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.domain.resent_times import tag_input
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import body

TEN_DAYS_MS = 10 * 24 * 3600 * 1000
TIME_ATTRIBUTES = ("tokenvault_sent_timestamp", "tokenvault_sent_timestamp_tag", "tokenvault_resent_from")


def _string(value: str, data_type: str = "String") -> Any:
    return {"DataType": data_type, "StringValue": value}


def _loaded_dates(stack_env: dict[str, str], event_ids: list[str]) -> dict[str, tuple[date, datetime]]:
    """Event id -> (create_date, sent_at) of the rows loaded under those event ids."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT event_id, create_date, sent_at FROM user_logins WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchall()
    return {event_id: (create_date, sent_at) for event_id, create_date, sent_at in rows}


def test_a_producer_s_sent_time_ten_days_back_loads_under_today_s_date(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a tag, or with one Transit does not verify, the time a producer claims is ignored, with a warning."""
    tag = uuid.uuid4().hex[:8]
    env = etl_harness_env(stack_env, vault.address)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    claimed = str(int(time.time() * 1000) - TEN_DAYS_MS)
    forged_tag = "vault:v1:" + base64.b64encode(os.urandom(32)).decode()
    claims = {
        f"{tag}-untagged": {"tokenvault_sent_timestamp": _string(claimed, "Number")},
        f"{tag}-forged-tag": {
            "tokenvault_sent_timestamp": _string(claimed, "Number"),
            "tokenvault_sent_timestamp_tag": _string(forged_tag),
            "tokenvault_resent_from": _string(str(uuid.uuid4())),
        },
    }
    message_ids = [
        sqs.send_message(
            QueueUrl=env["ETL_QUEUE_URL"],
            MessageBody=body(user_id=event_id),
            MessageAttributes={"event_id": _string(event_id), **extra},
        )["MessageId"]
        for event_id, extra in claims.items()
    ]
    sent_at = datetime.now(UTC)
    with caplog.at_level(logging.WARNING), etl_consumer(env) as etl:
        assert etl.wired.consumer.drain().loaded == 2
    loaded = _loaded_dates(stack_env, list(claims))
    assert sorted(loaded) == sorted(claims)
    for create_date, sent in loaded.values():
        assert abs((sent - sent_at).total_seconds()) < 60  # SQS's own SentTimestamp, not ten days back
        assert create_date == sent.astimezone(UTC).date()
    warned = {getattr(r, "message_id", None) for r in caplog.records if "tokenvault_sent_timestamp" in r.getMessage()}
    assert warned >= set(message_ids)
    assert not [r for r in caplog.records if tag in r.getMessage()]  # the body (its user_id) is never logged


def test_a_genuine_resend_keeps_its_date_and_its_tag_on_another_body_or_event_id_does_not(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """The resend's tag verifies for its own body and event id only: copied elsewhere, SQS's date applies."""
    tag = uuid.uuid4().hex[:8]
    env = etl_harness_env(stack_env, vault.address)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    original_ms = int(time.time() * 1000) - TEN_DAYS_MS
    genuine = body(user_id=f"{tag}-genuine")
    with etl_consumer(env) as etl:  # a dead letter as the ETL writes it, ten days after its event was sent
        assert etl.wired.sealer is not None
        [envelope] = etl.wired.sealer.seal([genuine])
    sqs.send_message(
        QueueUrl=env["ETL_DLQ_URL"],
        MessageBody=envelope,
        MessageAttributes={
            "reason": _string("processing_failed"),
            "reason_detail": _string("a bug, fixed since"),
            "source_message_id": _string(str(uuid.uuid4())),
            "source_sent_timestamp": _string(str(original_ms), "Number"),
            "event_id": _string(f"{tag}-genuine"),
        },
    )
    [dead] = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    resent = run_dead_letters(env, "resend", dead["MessageId"], token=operator_token)
    assert resent.returncode == 0, resent.stderr
    # Whoever may read and send to the source queue copies the re-sent message's time attributes.
    [copy] = sqs.receive_message(QueueUrl=env["ETL_QUEUE_URL"], MessageAttributeNames=["All"])["Messages"]
    sqs.change_message_visibility(
        QueueUrl=env["ETL_QUEUE_URL"], ReceiptHandle=copy["ReceiptHandle"], VisibilityTimeout=0
    )
    copied: dict[str, Any] = {k: v for k, v in copy["MessageAttributes"].items() if k in TIME_ATTRIBUTES}
    copies = {f"{tag}-other-body": body(user_id=f"{tag}-other-body"), f"{tag}-same-body": genuine}
    for event_id, text in copies.items():
        sqs.send_message(
            QueueUrl=env["ETL_QUEUE_URL"], MessageBody=text, MessageAttributes={"event_id": _string(event_id), **copied}
        )
    # Review 22, R22-9: a producer's claim over a 600 KB event id (a `verify` item over OpenBao's 2 MiB
    # bound) is not sent to Transit; it neither stalls the genuine claims received with it nor loads.
    poison = sqs.send_message(
        QueueUrl=env["ETL_QUEUE_URL"],
        MessageBody=body(user_id=f"{tag}-poison"),
        MessageAttributes={"event_id": _string("é" * 300_000), **copied},
    )["MessageId"]
    with etl_consumer(env) as etl:
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined) == (3, 1)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        assert conn.execute("SELECT reason FROM etl_quarantine WHERE sqs_message_id = %s", (poison,)).fetchall() == [
            ("invalid_event_id",)
        ]
    loaded = _loaded_dates(stack_env, [f"{tag}-genuine", *copies])
    original = datetime.fromtimestamp(original_ms / 1000, UTC)
    assert loaded[f"{tag}-genuine"] == (original.date(), original)
    today = datetime.now(UTC).date()
    assert {event_id: loaded[event_id][0] for event_id in copies} == dict.fromkeys(copies, today)


def test_a_take_back_s_tag_keeps_its_event_s_date_and_copied_onto_another_body_or_event_id_does_not(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Review 20, R20-13: the ETL's take-back key vouches for the time it tagged, for that body and event id only.

    Tagged as a take-back tags the SentTimestamp SQS kept on a DLQ copy (here ten days back, within
    the DLQ's retention), through the ETL's own Transit login; a producer copying the three
    attributes onto another body, or onto the same body under another event id, gets SQS's date.
    """
    tag = uuid.uuid4().hex[:8]
    env = etl_harness_env(stack_env, vault.address)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    original_ms = int(time.time() * 1000) - TEN_DAYS_MS
    taken_back, letter_id = body(user_id=f"{tag}-taken-back"), str(uuid.uuid4())
    with etl_consumer(env) as etl:
        assert isinstance(etl.wired.sealer, TransitSealer)
        [made] = etl.wired.sealer.tag_take_back_times(
            [tag_input(letter_id, f"{tag}-taken-back", original_ms, taken_back)]
        )
        time_attributes = {
            "tokenvault_sent_timestamp": _string(str(original_ms), "Number"),
            "tokenvault_sent_timestamp_tag": _string(made),
            "tokenvault_resent_from": _string(letter_id),
        }
        copies = {
            f"{tag}-taken-back": taken_back,
            f"{tag}-other-body": body(user_id=f"{tag}-other-body"),
            f"{tag}-other-event-id": taken_back,
        }
        for event_id, text in copies.items():
            sqs.send_message(
                QueueUrl=env["ETL_QUEUE_URL"],
                MessageBody=text,
                MessageAttributes={"event_id": _string(event_id), **time_attributes},
            )
        assert etl.wired.consumer.drain().loaded == 3
    loaded = _loaded_dates(stack_env, list(copies))
    original = datetime.fromtimestamp(original_ms / 1000, UTC)
    today = datetime.now(UTC).date()
    assert {event_id: dates[0] for event_id, dates in loaded.items()} == {
        f"{tag}-taken-back": original.date(),
        f"{tag}-other-body": today,
        f"{tag}-other-event-id": today,
    }
    assert loaded[f"{tag}-taken-back"][1] == original
