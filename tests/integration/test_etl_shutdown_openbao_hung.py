"""SIGTERM while OpenBao hangs (connections open, nothing answered): the ETL exits within its grace, losing nothing.

Chaos 49 (held): every batch's rows are signed in OpenBao; frozen mid-run, the batches in hand wait on it. The
held messages are released at the end of the grace period and the process exits 0; a new consumer, OpenBao
answering again, loads each event once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import assert_each_event_landed_once, events, where_each_event_landed
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed
from tests.integration.tcp_outage import TcpOutage

GRACE_SECONDS = 3


@pytest.fixture
def openbao_path(stack_env: dict[str, str]) -> Iterator[TcpOutage]:
    proxy = TcpOutage(int(urlsplit(stack_env["VAULT_ADDR"]).port or 8200))
    yield proxy
    proxy.close()


def test_sigterm_with_openbao_hung_exits_within_the_grace_period_and_loses_nothing(
    stack_env: dict[str, str], vault: RunningVault, openbao_path: TcpOutage
) -> None:
    sent = events(2000, malformed_rate=0.05)
    env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=30),
        "ETL_DLQ_SEAL_VAULT_ADDR": openbao_path.url(stack_env["VAULT_ADDR"]),
        "ETL_BATCH_SIZE": "50",
        "ETL_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "ETL_METRICS_PORT": "0",
    }
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env)
    wait_until_landed(process, stack_env["PG_ADMIN_DSN"], sent, 200)
    openbao_path.freeze()
    time.sleep(1)  # batches in hand now wait on their signature
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    err = exit_within(process, 60, "SIGTERM")
    took = time.monotonic() - signalled
    assert process.returncode == 0, err.decode()[-2000:]
    assert took < GRACE_SECONDS + 3, f"exit took {took:.1f} s"
    assert b"shutdown grace over: releasing unfinished work" in err  # batches were waiting on OpenBao
    assert len(sent) > sum(map(len, where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)))
    openbao_path.up()
    with etl_consumer(env) as etl:  # released at stop: visible again, a new consumer finishes the job
        etl.wired.consumer.drain()
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
