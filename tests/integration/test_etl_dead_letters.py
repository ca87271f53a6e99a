"""The DLQ on real SQS: every message there has a reason and a quarantine row, and no PII in clear."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from devstack.events import OutgoingEvent, generate_events, send_events
from devstack.sqs import sqs_client
from etl_service.adapters.resent_time_tags import tag_resent_time
from etl_service.domain.resent_times import tag_input
from etl_service.service.sealing import NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.conftest import RunningVault, etl_consumer, etl_harness, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.integration.etl_landings import drained_within
from tests.malformed_samples import GOOD, body

MAX_RECEIVE_COUNT = 2
"""The `redrive` test's source queue: SQS's redrive moves a message to the DLQ on the receive after this many."""


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


def test_an_operator_lists_dead_letters_opens_one_audited_and_resends_it_fixed(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    broken = {k: v for k, v in {**GOOD, "user_id": f"fixme-{tag}"}.items() if k != "app_version"}
    too_large = body(user_id=f"large-{tag}", padding="x" * 20_000)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        assert etl.wired.sealer is not None and etl.wired.sealer.key_name == "tokenvault-dead-letters"
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-broken", json.dumps(broken))])
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-large", too_large)])
        assert etl.wired.consumer.drain().quarantined == 2
    listing = run_dead_letters(env, "list")
    assert listing.returncode == 0, listing.stderr
    assert (
        "missing_field" in listing.stdout
        and "body_too_large" in listing.stdout
        and "2 dead letter(s)" in listing.stdout
    )
    assert GOOD["ip"] not in listing.stdout
    dead = {
        d["MessageAttributes"]["reason"]["StringValue"]: d
        for d in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    broken_id, large_id = dead["missing_field"]["MessageId"], dead["body_too_large"]["MessageId"]
    assert json.loads(dead["body_too_large"]["Body"])["sealed_body"] is None  # over the size limit: not kept

    etl_token = etl_identity_token(stack_env)
    refused = run_dead_letters(env, "show", broken_id, token=etl_token)
    assert refused.returncode == 2 and "refused to decrypt" in refused.stderr  # the ETL seals, it cannot open

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    shown = run_dead_letters(env, "show", broken_id, token=operator_token)
    assert shown.returncode == 0 and json.loads(shown.stdout) == broken
    assert "transit/decrypt/tokenvault-dead-letters" in Path(stack_env["VAULT_AUDIT_LOG"]).read_text()
    assert "not kept" in run_dead_letters(env, "show", large_id, token=operator_token).stderr

    fixed = Path(tempfile.mkdtemp()) / "fixed.json"
    fixed.write_text(json.dumps({**broken, "app_version": "2.3.0"}))
    still_broken = run_dead_letters(env, "resend", broken_id, "--body-file", os.devnull)
    assert still_broken.returncode == 1 and "still refused" in still_broken.stderr
    resent = run_dead_letters(env, "resend", broken_id, "--body-file", str(fixed))
    assert resent.returncode == 0, resent.stderr
    with etl_consumer(env) as etl:
        assert etl.wired.consumer.drain().loaded == 1
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT event_id FROM user_logins WHERE user_id = %s", (f"fixme-{tag}",)).fetchall()
    assert rows == [(f"{tag}-broken",)]  # loaded once, under the original event id
    assert [d["MessageId"] for d in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)] == [large_id]


def etl_identity_token(env: dict[str, str]) -> str:
    """A token of the ETL's own AppRole (encrypt-only policy)."""
    client = hvac.Client(url=env["VAULT_ADDR"])
    secret_id = Path(env["DLQ_SEAL_SECRET_ID_FILE"]).read_text().strip()
    return str(client.auth.approle.login(role_id=env["DLQ_SEAL_ROLE_ID"], secret_id=secret_id)["auth"]["client_token"])


def test_redrive_takes_back_only_reasonless_dead_letters_under_their_original_event_id_and_sent_time(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """The drain's take-back and the operators' `redrive` are one implementation (DeadLetterQueue).

    A dead letter of the ETL's (an envelope) stays; an original SQS's redrive moved is taken back,
    a `reason` attribute of its producer's notwithstanding (attack 12, finding 2). One SQS's real
    redrive moved (its receives spent, never deleted) loads with `sent_at` its original
    SentTimestamp to the ms: `redrive` tags the time SQS kept on the DLQ copy with the operator's
    dead-letter key, as `resend` tags (before, it loaded under the redrive's time; R20-13).
    """
    tag = uuid.uuid4().hex[:8]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, max_receive_count=MAX_RECEIVE_COUNT)
    first_sent = int(time.time() * 1000) - 3 * 24 * 3600 * 1000  # re-sent once 3 days ago, then redriven again
    missing_field = {"reason": {"DataType": "String", "StringValue": "missing_field"}}
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    earlier = tag_input("d-earlier", f"{tag}-again", first_sent, body(user_id=f"{tag}-again"))
    vouched = tag_resent_time(stack_env["VAULT_ADDR"], operator_token, "tokenvault-dead-letters", earlier)
    attributes: dict[str, dict[str, Any]] = {
        f"{tag}-again": {  # as that `resend` tagged it: the tag goes along with the same body
            "tokenvault_sent_timestamp": {"DataType": "Number", "StringValue": str(first_sent)},
            "tokenvault_sent_timestamp_tag": {"DataType": "String", "StringValue": vouched},
            "tokenvault_resent_from": {"DataType": "String", "StringValue": "d-earlier"},
        },
        f"{tag}-plain": {},
        f"{tag}-producer-reason": {"reason": {"DataType": "String", "StringValue": "login"}},
        f"{tag}-reasoned": missing_field,
    }
    send_events(sqs, env["ETL_QUEUE_URL"], [OutgoingEvent(f"{tag}-moved", body(user_id=f"{tag}-moved"))])
    for _ in range(MAX_RECEIVE_COUNT):  # SQS's redrive moves it on the next receive, SentTimestamp and all
        [moved] = sqs.receive_message(
            QueueUrl=env["ETL_QUEUE_URL"], VisibilityTimeout=0, MessageSystemAttributeNames=["SentTimestamp"]
        )["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=env["ETL_QUEUE_URL"])
    for event_id, extra in attributes.items():
        sqs.send_message(
            QueueUrl=env["ETL_DLQ_URL"],
            MessageBody=(
                dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)
                if event_id == f"{tag}-reasoned"
                else body(user_id=event_id)
            ),
            MessageAttributes={"event_id": {"DataType": "String", "StringValue": event_id}, **extra},
        )
    plain_sent = time.time()
    ids = {
        m["MessageAttributes"]["event_id"]["StringValue"]: m["MessageId"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    }
    resent = run_dead_letters(env, "resend", ids[f"{tag}-again"])  # by hand, as it was
    assert resent.returncode == 0, resent.stderr
    redriven = run_dead_letters(env, "redrive", token=operator_token)  # the rest the ETL did not write
    assert redriven.returncode == 0 and "taken back: 3" in redriven.stdout, redriven.stderr
    with etl_consumer(env) as etl:
        assert etl.wired.consumer.drain().loaded == 4
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        sent: dict[str, Any] = dict(
            conn.execute(
                "SELECT event_id, extract(epoch FROM sent_at) FROM user_logins WHERE event_id = ANY(%s)",
                ([f"{tag}-again", f"{tag}-moved", f"{tag}-plain", f"{tag}-producer-reason"],),
            ).fetchall()
        )
    assert sorted(sent) == [f"{tag}-again", f"{tag}-moved", f"{tag}-plain", f"{tag}-producer-reason"]
    assert float(sent[f"{tag}-moved"]) == int(moved["Attributes"]["SentTimestamp"]) / 1000  # the original's
    assert float(sent[f"{tag}-again"]) == first_sent / 1000  # the original time, not the DLQ copy's
    assert abs(float(sent[f"{tag}-plain"]) - plain_sent) < 30  # SQS's own SentTimestamp of the redriven copy
    left = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    assert [m["MessageAttributes"]["event_id"]["StringValue"] for m in left] == [f"{tag}-reasoned"]


def test_a_producer_set_sent_time_past_year_9999_or_in_1970_loads_under_sqs_own_date(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Attack round 6, Break 1: the attribute put the event in clear in the DLQ, or backdated it."""
    tag = uuid.uuid4().hex[:8]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, visibility_timeout=5, max_receive_count=2)
    claims = {
        f"{tag}-far": "999999999999999",
        f"{tag}-1970": "1000",
        f"{tag}-next-year": str(int(time.time() + 3e7) * 1000),
    }
    sent_at = time.time()
    for event_id, claimed in claims.items():
        sqs.send_message(
            QueueUrl=env["ETL_QUEUE_URL"],
            MessageBody=body(user_id=event_id),
            MessageAttributes={
                "event_id": {"DataType": "String", "StringValue": event_id},
                "tokenvault_sent_timestamp": {"DataType": "Number", "StringValue": claimed},
            },
        )
    with etl_consumer(env) as etl:
        summary = drained_within(etl, 60)
    assert (summary.loaded, summary.quarantined) == (3, 0)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT event_id, create_date, sent_at FROM user_logins WHERE event_id = ANY(%s)", (list(claims),)
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(claims)
    for _, create_date, sent in rows:
        assert abs(sent.timestamp() - sent_at) < 60  # SQS's own SentTimestamp
        assert create_date == sent.astimezone(UTC).date()
    assert all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"]) == []


def test_dead_letters_list_survives_attributes_and_bodies_of_any_kind(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Attack round 6, Break 1: one dead letter with a time past year 9999 stopped every listing."""
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    poison = {
        "reason": "missing_field",
        "reason_detail": "forged\n00000000-0000-0000-0000-000000000000  not_json",
        "source_sent_timestamp": "999999999999999",
        "tokenvault_sent_timestamp": "999999999999999",
    }
    sqs.send_message(
        QueueUrl=env["ETL_DLQ_URL"],
        MessageBody=json.dumps({"format": "tokenvault-dead-letter/1", "sealed_body": 7, "key": ["k"], "note": {}}),
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in poison.items()},
    )
    sqs.send_message(QueueUrl=env["ETL_DLQ_URL"], MessageBody="[" * 50_000)  # moved by a redrive, say
    listing = run_dead_letters(env, "list")
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "2 dead letter(s)" in listing.stdout
    forged = [line for line in listing.stdout.splitlines() if line.startswith("00000000-0000")]
    assert forged == []  # the detail's line break cannot forge a line of its own


def test_an_event_id_carrying_an_ip_is_quarantined_under_the_sqs_id_and_stored_nowhere(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack round 6, Break 5: the producer's event_id went in clear to user_logins, the quarantine and the DLQ."""
    ip = "203.0.113.201"  # TEST-NET-3
    caplog.set_level(logging.INFO)
    tag = uuid.uuid4().hex[:8]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    good_id, bad_id = f"login-{ip}-{tag}-1", f"login-{ip}-{tag}-2"
    with etl_harness(stack_env, vault.address) as etl:
        ids = {
            event_id: sqs.send_message(
                QueueUrl=etl.queue_url,
                MessageBody=text,
                MessageAttributes={"event_id": {"DataType": "String", "StringValue": event_id}},
            )["MessageId"]
            for event_id, text in (
                (good_id, body(user_id=f"eid-good-{tag}")),
                (bad_id, body(user_id=f"eid-bad-{tag}", device_type="fridge")),
                (f"{tag}-plain", body(user_id=f"eid-plain-{tag}")),
            )
        }
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined) == (1, 2)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = (
            conn.execute("SELECT count(*) FROM user_logins WHERE event_id LIKE %s", (f"%{ip}%",)).fetchone(),
            conn.execute(
                "SELECT count(*) FROM etl_quarantine WHERE event_id LIKE %s OR detail LIKE %s", (f"%{ip}%", f"%{ip}%")
            ).fetchone(),
        )
        reasons: dict[str, str] = dict(
            conn.execute(
                "SELECT event_id, reason FROM etl_quarantine WHERE sqs_message_id = ANY(%s)",
                ([ids[good_id], ids[bad_id]],),
            ).fetchall()
        )
    assert stored == ((0,), (0,))
    assert reasons == {ids[good_id]: "invalid_event_id", ids[bad_id]: "invalid_event_id"}
    dead = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    assert len(dead) == 2
    assert not [m for m in dead if ip in m["Body"] or ip in json.dumps(m["MessageAttributes"])]
    assert "quarantined" in caplog.text and ip not in caplog.text
