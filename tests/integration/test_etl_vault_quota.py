"""The ETL over its new-token quota: good events load or are dead-lettered sealed, never redriven in clear.

Attack 19, finding 2: the vault's metered refusal (RESOURCE_EXHAUSTED, `retry-after-ms`) was handled
as an outage whose probe (health, `SELECT 1`) passed at once; the same messages were received until
SQS's redrive moved them to the DLQ with their raw bodies, no reason, no quarantine row - 75 of 100
valid events in 70 s. Here a vault of this module's own gives the ETL 2 new tokens a second (bursts
of 10), and `run` mode (what Kubernetes runs) consumes 30 valid events with 60 new values from a
queue pair that redrives after 3 receives: more than the quota serves before their last receive.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, running_vault
from tests.integration.dead_letters import all_dead_letters
from tests.integration.etl_landings import queue_depth

POLICY = """
[clients.etl-service]
tokenize = ["ip", "device_id"]
[clients.etl-service.limits]
tokenize_per_second = 200000
tokenize_burst = 500000
new_tokens_per_second = 2
new_tokens_burst = 10
"""
EVENTS = 30
SETTLE_SECONDS = 25.0


@pytest.fixture(scope="module")
def metered_vault(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVault]:
    policy = tmp_path_factory.mktemp("quota") / "policy.toml"
    policy.write_text(POLICY)
    with running_vault(stack_env, TOKENVAULT_POLICY_FILE=str(policy)) as vault:
        yield vault


def _events(run: str) -> list[OutgoingEvent]:
    """Valid events, each with an ip and a device id no test tokenized before (private and made-up values)."""
    n = uuid.uuid4().int
    bodies = [
        {"user_id": f"u-{run}-{i}", "device_type": "android", "ip": f"10.{n % 250}.{(n >> 8) % 250}.{i + 1}",
         "device_id": f"quota-{run}-{i:03d}", "locale": "en-US", "app_version": "2.3.1"}
        for i in range(EVENTS)
    ]  # fmt: skip
    return [OutgoingEvent(f"quota-{run}-{i}", json.dumps(body)) for i, body in enumerate(bodies)]


def test_over_its_quota_the_etl_loads_or_seals_every_good_event_and_sqs_redrives_none_in_clear(
    stack_env: dict[str, str], metered_vault: RunningVault
) -> None:
    run = uuid.uuid4().hex[:8]
    sent = _events(run)
    env = {
        **etl_harness_env(stack_env, metered_vault.address, visibility_timeout=10, max_receive_count=3),
        "ETL_BATCH_SIZE": "5",
        "ETL_MAX_BATCH_AGE_SECONDS": "0.2",
        "ETL_SHUTDOWN_GRACE_SECONDS": "5",
    }
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)
    with etl_consumer(env) as etl:
        consumer = threading.Thread(target=etl.wired.consumer.run, daemon=True)
        consumer.start()
        deadline = time.monotonic() + SETTLE_SECONDS
        while queue_depth(endpoint, env["ETL_QUEUE_URL"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        etl.wired.consumer.stop()
        consumer.join(30)
    letters = all_dead_letters(endpoint, env["ETL_DLQ_URL"])
    in_clear = [m for m in letters if '"ip"' in m["Body"] or f"quota-{run}" in m["Body"]]
    assert not len(in_clear), f"{len(in_clear)} of {len(letters)} dead letters hold an event in clear"
    reasons = {m["MessageAttributes"].get("reason", {}).get("StringValue") for m in letters}
    assert reasons <= {"dependency_unavailable"}, reasons
    dead = {m["MessageAttributes"]["event_id"]["StringValue"] for m in letters}
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        ids = [e.event_id for e in sent]
        loaded = {r[0] for r in conn.execute("SELECT event_id FROM user_logins WHERE event_id = ANY(%s)", (ids,))}
        quarantined = dict(
            conn.execute("SELECT event_id, reason FROM etl_quarantine WHERE event_id = ANY(%s)", (ids,)).fetchall()
        )
    assert len(loaded) < EVENTS, "the quota never bit: the test proves nothing"
    assert loaded | dead == set(ids) and not loaded & dead  # each event in exactly one place
    assert quarantined == dict.fromkeys(dead, "dependency_unavailable")
