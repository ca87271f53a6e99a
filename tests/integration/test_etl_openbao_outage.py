"""OpenBao down for the ETL (it signs each batch's rows and seals dead letters there): receiving waits for it.

Chaos 49, C49-4: the gate's probe asked the vault service and Postgres only, so after a batch failed for OpenBao the
gate reopened at the first probe (0.5 s) and every receive failed the same way: receive counts were spent every few
seconds, and on each message's last receive the dead-lettering needed OpenBao as well, so SQS's redrive moved the good
events to the DLQ in clear, with no reason, until a take-back. The probe now asks OpenBao too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from etl_service.service.outcomes import RunSummary
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters
from tests.integration.etl_landings import assert_each_event_landed_once, events, queue_depth
from tests.integration.tcp_outage import TcpOutage

OUTAGE_SECONDS = 30


@pytest.fixture
def openbao_path(stack_env: dict[str, str]) -> Iterator[TcpOutage]:
    proxy = TcpOutage(int(urlsplit(stack_env["VAULT_ADDR"]).port or 8200))
    yield proxy
    proxy.close()


def test_openbao_down_pauses_receiving_and_spends_no_receive_count_until_it_returns(
    stack_env: dict[str, str], vault: RunningVault, openbao_path: TcpOutage
) -> None:
    sent = events(20, malformed_rate=0)
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=2, max_receive_count=4),
        "ETL_DLQ_SEAL_VAULT_ADDR": openbao_path.url(stack_env["VAULT_ADDR"]),
        "ETL_BATCH_SIZE": "10",
    }
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    with etl_consumer(etl_env) as etl:
        counts: list[int] = []
        receive = etl.wired.queue.receive

        def counted(*args: Any, **kwargs: Any) -> Any:
            got = receive(*args, **kwargs)
            counts.extend(m.receive_count for m in got)
            return got

        etl.wired.queue.receive = counted  # type: ignore[method-assign]
        openbao_path.down()
        send_events(sqs_client(endpoint), etl.queue_url, sent)
        summaries: list[RunSummary] = []
        drain = threading.Thread(target=lambda: summaries.append(etl.wired.consumer.drain()), daemon=True)
        drain.start()
        time.sleep(OUTAGE_SECONDS)
        spent = max(counts, default=0)
        in_dlq = len(all_dead_letters(endpoint, etl.dlq_url))
        in_queue = queue_depth(endpoint, etl.queue_url)
        openbao_path.up()
        drain.join(120)
        assert not drain.is_alive(), "the drain did not end once OpenBao answered again"
    assert (spent, in_dlq, in_queue) == (1, 0, len(sent)), "receives spent on an OpenBao outage"
    assert summaries[0].taken_back_from_dlq == 0 and summaries[0].loaded == len(sent)
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, endpoint, etl_env["ETL_DLQ_URL"])
