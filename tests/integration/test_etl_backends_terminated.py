"""The ETL's database sessions ended every 100 ms mid-drain: each event in one place only.

Chaos 49 (held): pg_terminate_backend on every session of the ETL's role, every 0.1 s for 15 s, while a drain
loads 2,000 events (batches of 10, one worker) with a redrive limit of 2 - loads cut in their COPY or their COMMIT,
quarantine writes cut. Afterwards every event is in user_logins exactly once or in the DLQ with a reason, never in
both, and the queue is empty.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters
from tests.integration.etl_landings import events, queue_depth, where_each_event_landed

TERMINATE_SECONDS = 15


def terminate_etl_sessions(admin_dsn: str, until: float, ended: list[int]) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while time.monotonic() < until:
            found = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'"
            ).fetchone()
            ended.append(int(found[0]) if found else 0)
            time.sleep(0.1)


def test_etl_sessions_ended_every_300_ms_leave_each_event_loaded_once_or_dead_lettered_with_a_reason(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(2000, malformed_rate=0.02)
    endpoint, admin = stack_env["SQS_ENDPOINT_URL"], stack_env["PG_ADMIN_DSN"]
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=5, max_receive_count=2),
        "ETL_BATCH_SIZE": "10",
        "ETL_WORKERS": "1",
    }
    send_events(sqs_client(endpoint), etl_env["ETL_QUEUE_URL"], sent)
    ended: list[int] = []
    with etl_consumer(etl_env) as etl:
        drain = threading.Thread(target=etl.wired.consumer.drain, daemon=True)
        drain.start()
        terminate_etl_sessions(admin, time.monotonic() + TERMINATE_SECONDS, ended)
        drain.join(240)
        assert not drain.is_alive(), "the drain did not end once the sessions were left alone"
    assert sum(ended) > 10, "few sessions were ended"
    assert queue_depth(endpoint, etl_env["ETL_QUEUE_URL"]) == 0
    rows, _ = where_each_event_landed(admin, sent)
    dead = all_dead_letters(endpoint, etl_env["ETL_DLQ_URL"])
    assert all("reason" in m["MessageAttributes"] for m in dead), "a letter without a reason"
    lettered = {m["MessageAttributes"]["event_id"]["StringValue"] for m in dead if "event_id" in m["MessageAttributes"]}
    assert [e for e, n in Counter(rows).items() if n > 1] == [], "an event loaded twice"
    assert sorted(set(rows) & lettered) == [], "events both loaded and dead-lettered"
    unaccounted = {e.event_id for e in sent} - set(rows) - lettered
    assert len(unaccounted) <= sum(1 for m in dead if "event_id" not in m["MessageAttributes"]), "events lost"
