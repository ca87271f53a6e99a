"""The ETL loses nothing and duplicates nothing through crashes, outages and SIGTERM.

Real SQS (ministack), the real vault service and real PostgreSQL throughout. Each test ends
with the same check a data team would make: every sent event is in user_logins or in the
quarantine exactly once, and the DLQ holds exactly the quarantined ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.events import send_events
from devstack.postgres import Postgres, pg_ctl
from devstack.procs import free_port
from devstack.sqs import sqs_client
from etl_service.service.outcomes import RunSummary
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, running_vault
from tests.integration.etl_crash_driver import CRASHED, STEPS
from tests.integration.etl_landings import (
    assert_each_event_landed_once,
    dead_letters,
    events,
    is_valid,
    queue_depth,
    where_each_event_landed,
)
from tests.integration.own_cluster import cluster_of_its_own
from tests.leaky_events import leaked, raw_values

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_after_any_step_loses_nothing_and_duplicates_nothing(
    stack_env: dict[str, str], vault: RunningVault, step: str
) -> None:
    sent = events(60, malformed_rate=0.2)
    etl_env = {**etl_harness_env(stack_env, vault.address, visibility_timeout=2), "ETL_BATCH_SIZE": "20"}
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], sent)
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.integration.etl_crash_driver", step],
        env={**os.environ, **etl_env, "ETL_RECEIVERS": "1"},
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == CRASHED, crashed.stderr.decode()[-2000:]
    assert queue_depth(stack_env["SQS_ENDPOINT_URL"], etl_env["ETL_QUEUE_URL"]) > 0  # the crash left work behind
    with etl_consumer(etl_env) as etl:
        etl.wired.consumer.drain()
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)


def test_sigterm_mid_drain_commits_in_flight_work_and_exits_zero(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(3000, malformed_rate=0.05)
    etl_env = {**etl_harness_env(stack_env, vault.address, visibility_timeout=30), "ETL_BATCH_SIZE": "50"}
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], sent)
    process = subprocess.Popen(
        [sys.executable, "-m", "etl_service", "drain"],
        env={**os.environ, **etl_env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while sum(map(len, where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent))) < 300:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()[-2000:]
    landed = sum(map(len, where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)))
    assert landed < len(sent), "the SIGTERM came too late to test anything"
    assert b"released at stop" in out
    logs = err.decode()
    # Every event's values, the rejected ones' too: a rejection message is where a value would be quoted.
    raw = raw_values(e.body for e in sent)
    assert len(raw) > len(raw_values(e.body for e in sent if is_valid(e)))
    assert '"message_id"' in logs and leaked(raw, logs) == []
    # Released messages are visible again at once: a new consumer finishes the job.
    with etl_consumer(etl_env) as etl:
        etl.wired.consumer.drain()
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own, so the test can restart it."""
    with cluster_of_its_own(tmp_path) as postgres:
        yield postgres


def test_vault_down_30s_and_a_postgres_restart_mid_drain_end_with_every_event_landed(
    stack_env: dict[str, str], private_postgres: Postgres
) -> None:
    pg = private_postgres
    sent = events(6000, malformed_rate=0.02)
    address = f"127.0.0.1:{free_port()}"
    etl_env = {
        **etl_harness_env(stack_env, address, visibility_timeout=10),
        "ETL_DATABASE_DSN": pg.etl_dsn,
        "ETL_BATCH_SIZE": "20",
        "ETL_RECEIVERS": "2",
        "ETL_WORKERS": "1",
    }
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], sent)

    def landed() -> int:
        return sum(map(len, where_each_event_landed(pg.admin_dsn, sent)))

    def wait_for(count: int, limit: float = 120) -> None:
        deadline = time.monotonic() + limit
        while landed() < count:
            assert time.monotonic() < deadline, f"stuck at {landed()} of {count}"
            time.sleep(0.1)

    summaries: list[RunSummary] = []
    with etl_consumer(etl_env) as etl:
        drain = threading.Thread(target=lambda: summaries.append(etl.wired.consumer.drain()))
        with running_vault(stack_env, address=address, TOKENVAULT_DATABASE_DSN=pg.vault_dsn):
            drain.start()
            wait_for(300)
        before_outage = landed()
        time.sleep(30)  # the vault service is down
        during_outage = landed()
        with running_vault(stack_env, address=address, TOKENVAULT_DATABASE_DSN=pg.vault_dsn):
            wait_for(during_outage + 300)
            pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "restart", pg.port)
            drain.join(timeout=240)
        assert not drain.is_alive(), "the drain did not finish after both dependencies returned"
    assert during_outage - before_outage <= 100  # at most the batches in hand when it went down
    assert summaries[0].retried > 0
    assert_each_event_landed_once(pg.admin_dsn, sent, stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)


def test_a_missing_queue_stops_the_start_with_a_clear_message(stack_env: dict[str, str], vault: RunningVault) -> None:
    etl_env = etl_harness_env(stack_env, vault.address)
    missing = etl_env["ETL_QUEUE_URL"] + "-nope"
    result = subprocess.run(
        [sys.executable, "-m", "etl_service", "run"],
        env={**os.environ, **etl_env, "ETL_QUEUE_URL": missing, "ETL_DLQ_URL": etl_env["ETL_DLQ_URL"]},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"stopping: SQS queue {missing} refused: " in result.stderr


def test_a_poison_message_is_quarantined_on_its_last_receive_while_its_batch_loads(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(8, malformed_rate=0)
    poison = sent[3]
    poison_user = json.loads(poison.body)["user_id"]
    etl_env = etl_harness_env(stack_env, vault.address, visibility_timeout=10, max_receive_count=2)
    with etl_consumer(etl_env) as etl:
        write = etl.wired.store.write

        def write_unless_poisoned(rows: Any, quarantined: Any, manifest: Any = None) -> Any:
            if any(row.user_id == poison_user for row in rows):
                raise RuntimeError("a bug this message triggers")
            return write(rows, quarantined, manifest)

        etl.wired.store.write = write_unless_poisoned  # type: ignore[method-assign]
        send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl.queue_url, sent)
        etl.wired.consumer.drain()
    rows, quarantined = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert sorted(rows) == sorted(e.event_id for e in sent if e is not poison) and quarantined == [poison.event_id]
    # The ETL quarantined it itself on its last receive: a reason, not a silent redrive.
    assert dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url) == [(poison.event_id, "processing_failed")]
