"""SIGTERM while a batch on its last receive waits out a database outage: the waits end, the letters stay sealed.

Session 48's closing note (left): with the database down, a batch holding a message on its last receive waited out
the pool (10 s) and the login check for its replay check, again for the re-read of a lost COMMIT, again for its
quarantine rows (~10-15 s each) before it dead-lettered them. A SIGTERM did not end those waits: the stop took the
whole grace (measured on the code before: 10.2 s of a 10 s grace, the 10 events dead-lettered
`released_on_last_receive` by the grace's release, to wait for an operator's resend). Now the stop ends them: each
message is sealed and dead-lettered `dependency_unavailable` at once, as without a stop - never left to SQS's
redrive, which moves a body to the DLQ in clear - and once the database is back an operator's resend loads each
event once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters_here
from tests.integration.etl_landings import assert_each_event_landed_once, events, queue_depth
from tests.integration.etl_process import EtlLog, start_etl
from tests.integration.tcp_outage import TcpOutage

GRACE_SECONDS = 10
EVENTS = 10


@pytest.fixture
def database_path(stack_env: dict[str, str]) -> Iterator[TcpOutage]:
    proxy = TcpOutage(int(conninfo_to_dict(stack_env["PG_ETL_DSN"]).get("port") or 5432))
    yield proxy
    proxy.close()


def _wait_until_received(endpoint: str, queue_url: str) -> None:
    """Wait until the ETL received all EVENTS messages (in flight, none visible): its batch is in hand."""
    sqs, deadline = sqs_client(endpoint), time.monotonic() + 30
    while True:
        counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        if int(counts["ApproximateNumberOfMessagesNotVisible"]) >= EVENTS:
            return
        assert time.monotonic() < deadline, f"the ETL did not receive the {EVENTS} events: {counts}"
        time.sleep(0.1)


def test_sigterm_while_a_last_receive_waits_out_a_database_outage_exits_within_the_grace_and_loses_nothing(
    stack_env: dict[str, str],
    vault: RunningVault,
    database_path: TcpOutage,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sent = events(EVENTS, malformed_rate=0)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=6, max_receive_count=1),
        "ETL_DATABASE_DSN": make_conninfo(stack_env["PG_ETL_DSN"], host="127.0.0.1", port=str(database_path.port)),
        "ETL_BATCH_SIZE": str(EVENTS),
        "ETL_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "ETL_METRICS_PORT": "0",
    }
    process = start_etl(env, stdout=subprocess.DEVNULL)
    log = EtlLog(process)
    log.wait_for("started")
    database_path.down()  # every connection ended, new ones refused until up()
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)  # each receive is the last (limit 1)
    _wait_until_received(endpoint, env["ETL_QUEUE_URL"])
    # Its first database call waits on the pool (10 s) now; the code before db10a5c stopped only after the whole
    # grace (10.2 s) however soon after the receive the signal came.
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    process.wait(timeout=90)
    took = time.monotonic() - signalled
    in_dlq = all_dead_letters(endpoint, env["ETL_DLQ_URL"])
    reasons = sorted(str(m.get("MessageAttributes", {}).get("reason", {}).get("StringValue")) for m in in_dlq)
    in_queue = queue_depth(endpoint, env["ETL_QUEUE_URL"])
    print(f"exit {process.returncode} after {took:.1f} s; DLQ {reasons}; queue {in_queue}")
    assert process.returncode == 0, log.tail()
    assert took < GRACE_SECONDS - 3, f"exit took {took:.1f} s: the stop waited on the outage"
    # Each dead-lettered by the ETL, sealed, with its reason - none left for SQS's redrive to move in clear.
    assert reasons == ["dependency_unavailable"] * EVENTS and in_queue == 0, f"DLQ {reasons}; queue {in_queue}"
    values = [json.loads(e.body)[field] for e in sent for field in ("ip", "device_id")]
    assert not [m for m in in_dlq if any(value in m["Body"] for value in values)], "a letter holds a value in clear"
    database_path.up()
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    for letter in in_dlq:
        resent = run_dead_letters_here(monkeypatch, capsys, env, "resend", letter["MessageId"], token=operator_token)
        assert resent.returncode == 0, resent.stderr[-2000:]
    with etl_consumer(env) as etl:
        summary = etl.wired.consumer.drain()
    assert summary.loaded == EVENTS
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, endpoint, env["ETL_DLQ_URL"])
