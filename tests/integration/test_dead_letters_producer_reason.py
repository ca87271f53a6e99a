"""A `reason` attribute set by a producer does not keep a redriven original in the DLQ (attack 12, finding 2).

SQS's redrive moves an original with all of its producer's attributes. The take-back kept every
DLQ message carrying a `reason`: such an event was never loaded, its body stayed in the DLQ in
clear, and the drain exited 0. A forged envelope (base64 of clear values for a ciphertext) with a
reason, redriven before the ETL saw it, never met round 10's Transit proof. Now a take-back keeps
only what the ETL wrote, a sealed envelope once Transit proves it. `show` and `resend` tell such
a letter's body in clear by the body too (they said it was not kept). Real SQS (ministack, its
redrive policy after 2 receives), OpenBao, Postgres and the vault.

Synthetic TEST-NET values only; each check is reduced to a boolean before it is asserted.
"""

from __future__ import annotations

import uuid

import psycopg

from devstack.sqs import sqs_client
from etl_service.entrypoints.cli import EXIT_OK, drain_status
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, redrive, run_dead_letters, send
from tests.integration.etl_landings import drained_within
from tests.integration.forged_letters import clear_in, forged_in_clear, person
from tests.malformed_samples import body


def test_a_redriven_original_with_a_producer_reason_is_loaded_and_a_forged_envelope_ends_sealed(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    plain, reasoned, victim = person(f"{tag}p"), person(f"{tag}r"), person(f"{tag}v")
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    queue_url, dlq_url = env["ETL_QUEUE_URL"], env["ETL_DLQ_URL"]
    send(sqs, queue_url, f"{tag}-plain", body(**plain))
    send(sqs, queue_url, f"{tag}-reasoned", body(**reasoned), reason="login")  # a producer's own metadata
    send(sqs, queue_url, f"{tag}-forged", forged_in_clear(victim), reason="not_json")
    moved = redrive(sqs, queue_url, dlq_url, endpoint, expected=3)
    assert sorted(m["MessageAttributes"]["event_id"]["StringValue"] for m in moved) == [
        f"{tag}-forged",
        f"{tag}-plain",
        f"{tag}-reasoned",
    ]

    listing = run_dead_letters(env, "list")
    assert listing.returncode == 0, listing.stderr
    marks = {row.split()[0]: row.split()[-1] for row in listing.stdout.splitlines()[1:-1]}
    by_event = {m["MessageAttributes"]["event_id"]["StringValue"]: m["MessageId"] for m in moved}
    reasoned_mark = marks[by_event[f"{tag}-reasoned"]]
    assert reasoned_mark == "CLEAR", "a body in clear was not marked CLEAR because of its reason attribute"

    with etl_consumer(env) as etl:
        summary = drained_within(etl, 120)
    assert drain_status(summary) == EXIT_OK
    assert (summary.taken_back_from_dlq, summary.loaded, summary.quarantined) == (3, 2, 1)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        loaded = conn.execute(
            "SELECT event_id FROM user_logins WHERE event_id = ANY(%s) ORDER BY event_id",
            ([f"{tag}-plain", f"{tag}-reasoned"],),
        ).fetchall()
    assert loaded == [(f"{tag}-plain",), (f"{tag}-reasoned",)]

    [left] = all_dead_letters(endpoint, dlq_url)
    attributes = {k: v["StringValue"] for k, v in left["MessageAttributes"].items()}
    assert attributes["event_id"] == f"{tag}-forged" and attributes["reason"] == "missing_field"
    assert clear_in([left], victim) == [], "a forged envelope kept a person's values in the DLQ in clear"
    assert clear_in([left], reasoned) == [] and clear_in([left], plain) == []


def test_show_and_resend_take_a_redriven_original_with_a_producer_reason_as_it_is(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """`list` marks it CLEAR by its body; `show` and `resend` said its body was not kept (exit 1)."""
    tag = uuid.uuid4().hex[:8]
    original = body(**person(f"{tag}s"))
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    queue_url, dlq_url = env["ETL_QUEUE_URL"], env["ETL_DLQ_URL"]
    send(sqs, queue_url, f"{tag}-reasoned", original, reason="login")
    [moved] = redrive(sqs, queue_url, dlq_url, endpoint, expected=1)

    shown = run_dead_letters(env, "show", moved["MessageId"])  # no token: a body in clear needs no OpenBao
    assert shown.returncode == 0, shown.stderr
    printed_as_it_is = shown.stdout == original + "\n"
    assert printed_as_it_is

    resent = run_dead_letters(env, "resend", moved["MessageId"])
    assert resent.returncode == 0, resent.stderr
    assert all_dead_letters(endpoint, dlq_url) == []
    [back] = sqs.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=1)["Messages"]
    same_body = back["Body"] == original
    assert same_body and back["MessageAttributes"]["event_id"]["StringValue"] == f"{tag}-reasoned"
