"""A database that accepts no writes (a standby after a failover, default_transaction_read_only) is an outage.

Chaos 49, C49-1: the load's `read_only_sql_transaction` (SQLSTATE 25006) is no connection error, so the ETL took it
for a bug of each message: it retried the batch one message at a time, kept receiving (the gate stayed open: its
probe's `SELECT 1` passes on a read-only session) and on each message's last receive dead-lettered it as
`processing_failed` - every good event in the DLQ within seconds. It is a dependency down now: the batch is
postponed, the gate's probe asks whether the session may write, and receiving waits until it may.
"""

from __future__ import annotations

import threading
import time

import psycopg

from devstack.events import send_events
from devstack.sqs import sqs_client
from etl_service.service.outcomes import RunSummary
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import assert_each_event_landed_once, dead_letters, events, queue_depth

READ_ONLY_SECONDS = 20


def set_etl_read_only(admin_dsn: str, read_only: bool) -> None:
    """The ETL role's new sessions read-only (or not), and its open sessions ended so the pool opens new ones."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if read_only:
            conn.execute("ALTER ROLE tokenvault_etl SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER ROLE tokenvault_etl RESET default_transaction_read_only")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'"
            " AND application_name = 'tokenvault-etl'"
        )


def test_a_read_only_database_postpones_every_batch_and_pauses_receiving_until_it_takes_writes(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(30, malformed_rate=0)
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=2, max_receive_count=3),
        "ETL_BATCH_SIZE": "10",
    }
    endpoint, admin = stack_env["SQS_ENDPOINT_URL"], stack_env["PG_ADMIN_DSN"]
    send_events(sqs_client(endpoint), etl_env["ETL_QUEUE_URL"], sent)
    set_etl_read_only(admin, True)
    try:
        with etl_consumer(etl_env) as etl:
            summaries: list[RunSummary] = []
            drain = threading.Thread(target=lambda: summaries.append(etl.wired.consumer.drain()), daemon=True)
            drain.start()
            time.sleep(READ_ONLY_SECONDS)  # three receives at 2 s and 4 s backoffs would have spent them all
            assert dead_letters(endpoint, etl.dlq_url) == [], "good events were dead-lettered for a read-only database"
            assert queue_depth(endpoint, etl.queue_url) == len(sent)
            assert drain.is_alive()  # a drain waits for its dependency
            set_etl_read_only(admin, False)
            drain.join(90)
            assert not drain.is_alive(), "the drain did not end once the database took writes again"
    finally:
        set_etl_read_only(admin, False)
    assert summaries[0].loaded == len(sent) and summaries[0].retried > 0
    assert_each_event_landed_once(admin, sent, endpoint, etl_env["ETL_DLQ_URL"])
