"""A same-batch retry under one event_id with another ip and device id mints nothing (attack 38, M4).

Neither is loaded when the batch asks `loaded_before`, so both were tokenized; the load's comparison
(`user_logins_reused_event_ids`) takes no token, so the second was a "replay": counted `already_loaded`, deleted,
no quarantine row, no dead letter - its ip and device id in the vault under tokens no row of user_logins held,
revealed by an investigator after every erasure step. Now the batch compares its events under one id itself, in
memory (service/loaded_step.held_in_batch), before the vault is called: the second is quarantined and
dead-lettered as `event_id_reused`, and the vault holds nothing of it.

Real SQS (ministack), the real ETL consumer (drain), the vault service, OpenBao and PostgreSQL; the vault's rows
are counted with the database owner's DSN. No value is printed.
"""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters
from tests.integration.fresh_values import fresh_value
from tests.malformed_samples import body
from tokenvault_api.v1 import vault_pb2

_ORPHANS = (
    "SELECT count(*) FROM vault.tokens t WHERE t.created_at >= %s AND NOT EXISTS"
    " (SELECT 1 FROM user_logins u WHERE u.masked_ip = t.token OR u.masked_device_id = t.token)"
)

_MINTED = "SELECT count(*) FROM vault.tokens WHERE created_at >= %s"


@pytest.mark.timeout(120)
def test_a_same_batch_retry_with_another_ip_and_device_is_dead_lettered_event_id_reused_and_mints_nothing(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    user_id = f"m4-user-{tag}"
    ips = [fresh_value(vault_pb2.TOKEN_TYPE_IP) for _ in range(2)]  # values no earlier test of the stack sent
    devices = [f"m4-device-{tag}-{n}" for n in (1, 2)]
    event_id = f"m4-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with (
        etl_consumer(etl_harness_env(stack_env, vault.address)) as etl,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        (before,) = admin.execute("SELECT now()").fetchone() or (None,)
        send_events(
            sqs,
            etl.queue_url,
            [OutgoingEvent(event_id, body(user_id=user_id, ip=ips[n], device_id=devices[n])) for n in (0, 1)],
        )
        summary = etl.wired.consumer.drain()
        assert (summary.loaded, summary.already_loaded, summary.quarantined) == (1, 0, 1), summary
        assert summary.reasons == {"event_id_reused": 1}
        ((loaded_message,),) = admin.execute(
            "SELECT sqs_message_id FROM user_logins WHERE event_id = %s", (event_id,)
        ).fetchall()
        (orphans,) = admin.execute(_ORPHANS, (before,)).fetchone() or (None,)
        assert orphans == 0, "the retry's values are in the vault under tokens no row holds"
        (minted,) = admin.execute(_MINTED, (before,)).fetchone() or (0,)
        assert minted == 2  # the loaded event's ip and device id, nothing more
        # Quarantined under its own message id, naming the batch mate that holds the id; no value in the detail.
        records = admin.execute(
            "SELECT sqs_message_id, detail FROM etl_quarantine WHERE reason = 'event_id_reused'"
            " AND event_id = sqs_message_id AND detail LIKE %s",
            (f"%{loaded_message}%",),
        ).fetchall()
        assert len(records) == 1 and records[0][0] != loaded_message
        assert not any(v in records[0][1] for v in (*ips, *devices))
    ours = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)  # this test's own queues
    assert [(m["MessageAttributes"]["reason"]["StringValue"], m["MessageAttributes"]["event_id"]["StringValue"])
            for m in ours] == [("event_id_reused", event_id)]  # fmt: skip
    envelope = json.loads(ours[0]["Body"])
    assert envelope.get("minted_tokens") is None  # nothing minted for it, nothing to record
    assert not any(v in ours[0]["Body"] for v in (*ips, *devices))  # sealed
    print(f"\nM4: loaded 1, event_id_reused 1, 0 orphan vault rows; {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(120)
def test_a_same_batch_retry_spelling_its_ipv6_in_upper_case_is_a_duplicate_and_no_letter(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Attack 39, P3: `2001:DB8::A1` is `2001:db8::a1` to the vault (one token): a replay, not `event_id_reused`."""
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    spellings = [f"2001:db8::{tag[:4]}", f"2001:DB8::{tag[:4].upper()}"]
    event_id = f"p3-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with (
        etl_consumer(etl_harness_env(stack_env, vault.address)) as etl,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        (before,) = admin.execute("SELECT now()").fetchone() or (None,)
        events = [
            OutgoingEvent(event_id, body(user_id=f"p3-user-{tag}", ip=ip, device_id=f"p3-device-{tag}"))
            for ip in spellings
        ]
        send_events(sqs, etl.queue_url, events)
        summary = etl.wired.consumer.drain()
        assert (summary.loaded, summary.already_loaded, summary.quarantined) == (1, 1, 0), summary
        (minted,) = admin.execute(_MINTED, (before,)).fetchone() or (0,)
        assert minted == 2  # one ip token, one device token
    assert all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url) == []  # no letter, no alert
    print(f"\nP3: loaded 1, already_loaded 1, no letter; {time.monotonic() - started:.1f} s")
