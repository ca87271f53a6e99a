"""SIGTERM while every load waits on PostgreSQL (a lock another session holds): exit within the grace, lose nothing.

Chaos 49: test_etl_shutdown.py hangs the vault; here the database hangs instead, inside the load's COPY (a session
holding a SHARE lock on user_logins, as a forgotten transaction of an owner's maintenance would). The held batches
are released at the end of the grace period, the process exits 0, and the blocked COPY never commits after the
exit: once the lock goes, a new consumer loads each event once.
"""

from __future__ import annotations

import signal
import time

import psycopg

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import assert_each_event_landed_once, events, where_each_event_landed
from tests.integration.etl_process import exit_within, start_etl

GRACE_SECONDS = 3


def etl_loads_waiting_on_a_lock(admin: psycopg.Connection) -> int:
    return int(
        admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tokenvault_etl' AND wait_event_type = 'Lock'"
        ).fetchone()[0]  # type: ignore[index]
    )


def test_sigterm_with_every_load_waiting_on_a_lock_exits_within_the_grace_period_and_loses_nothing(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(200, malformed_rate=0.05)
    env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=4),
        "ETL_BATCH_SIZE": "20",
        "ETL_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "ETL_METRICS_PORT": "0",
    }
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), env["ETL_QUEUE_URL"], sent)
    with (
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as watcher,
        psycopg.connect(stack_env["PG_ADMIN_DSN"]) as holder,
    ):
        holder.execute("LOCK TABLE public.user_logins IN SHARE MODE")  # held until the rollback below
        process = start_etl(env)
        deadline = time.monotonic() + 60
        while etl_loads_waiting_on_a_lock(watcher) < 2:  # both workers inside a COPY
            assert time.monotonic() < deadline and process.poll() is None, "no load came to wait on the lock"
            time.sleep(0.1)
        time.sleep(2 * 4)  # two leases: held batches keep their leases while they wait
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        err = exit_within(process, 60, "SIGTERM")
        took = time.monotonic() - signalled
        assert process.returncode == 0, err.decode()[-2000:]
        assert took < GRACE_SECONDS + 4, f"exit took {took:.1f} s"
        assert b"shutdown grace over: releasing unfinished work" in err
        assert where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent) == ([], [])
        holder.rollback()
    with etl_consumer(env) as etl:  # released at stop: visible again, a new consumer finishes the job
        etl.wired.consumer.drain()
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
