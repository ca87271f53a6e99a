"""The SQS endpoint gone for the ETL mid-drain, twice: its connections reset, new ones refused, then back.

Chaos 49 (held): during the cuts the receives fail, the batch deletes after a commit fail (their redelivery is a
replay), the DLQ sends fail (the refused message stays and is dead-lettered again), the lease extensions fail (a
message held may be delivered to another receiver meanwhile) and the drain's depth checks fail. Once SQS answers
again every event ends in user_logins or the quarantine exactly once, the DLQ holds the quarantined ones, each with
its reason, and the queue is empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from etl_service.service.outcomes import RunSummary
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import assert_each_event_landed_once, events, queue_depth, where_each_event_landed
from tests.integration.tcp_outage import TcpOutage


@pytest.fixture
def sqs_path(stack_env: dict[str, str]) -> Iterator[TcpOutage]:
    proxy = TcpOutage(int(urlsplit(stack_env["SQS_ENDPOINT_URL"]).port or 80))
    yield proxy
    proxy.close()


def test_the_sqs_endpoint_cut_twice_mid_drain_loses_and_duplicates_nothing(
    stack_env: dict[str, str], vault: RunningVault, sqs_path: TcpOutage
) -> None:
    sent = events(1500, malformed_rate=0.05)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=3, max_receive_count=10),
        "ETL_SQS_ENDPOINT_URL": sqs_path.url(endpoint),
        "ETL_BATCH_SIZE": "25",
    }
    send_events(sqs_client(endpoint), etl_env["ETL_QUEUE_URL"], sent)

    def landed() -> int:
        return sum(map(len, where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)))

    summaries: list[RunSummary] = []
    with etl_consumer(etl_env) as etl:
        drain = threading.Thread(target=lambda: summaries.append(etl.wired.consumer.drain()), daemon=True)
        drain.start()
        for mark in (300, 800):
            deadline = time.monotonic() + 120
            while landed() < mark:
                assert time.monotonic() < deadline and drain.is_alive(), f"stuck at {landed()}"
                time.sleep(0.02)
            sqs_path.down()
            time.sleep(8)  # past two leases: held messages' extensions fail, their leases run out
            sqs_path.up()
        drain.join(180)
        assert not drain.is_alive(), "the drain did not end once SQS answered again"
    assert queue_depth(endpoint, etl_env["ETL_QUEUE_URL"]) == 0
    assert summaries[0].retried + summaries[0].delete_failures > 0, "the cuts met no batch"
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, endpoint, etl_env["ETL_DLQ_URL"])
