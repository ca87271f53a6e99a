"""The vault's quota paces the ETL within a receive, through the vault client's own rate-limit waits.

Attack 19, finding 2: a metered refusal (RESOURCE_EXHAUSTED with `retry-after-ms`) postponed the
batch, so SQS counted one more receive toward the redrive limit each time the vault said "later".
GrpcTokenizer's VaultClient waits out the vault's retry-after (up to 30 s in all, the leases kept)
and tries the same Tokenize again; past that, or once the consumer stops, the refusal goes up as
`Throttled` and the batch is postponed for at least the retry-after. Over a fake gRPC channel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from etl_service.adapters.vault_client import MAX_THROTTLED_WAIT_SECONDS, GrpcTokenizer, QuotaWaitLog
from etl_service.bootstrap import bootstrap
from etl_service.config import EtlConfig
from etl_service.errors import MAX_THROTTLED_SECONDS, Throttled, vault_status_error
from etl_service.service.batch import BatchProcessor
from etl_service.service.gate import DependencyGate
from tests.unit.etl_builders import good, message, minimal_etl_env
from tests.unit.fakes import FakeLoginStore, FakeQueue
from tests.unit.rpc_errors import FakeRpcError
from tokenvault_api.v1 import vault_pb2


class MeteredChannel:
    """A channel to a vault that refuses the first `refusals` Tokenize calls over the ETL's quota, then serves."""

    def __init__(self, refusals: int, retry_after_ms: int = 50) -> None:
        self.refusals, self.retry_after_ms, self.attempts = refusals, retry_after_ms, 0

    def unary_unary(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        def tokenize(request: vault_pb2.TokenizeRequest, timeout: float) -> vault_pb2.TokenizeResponse:
            self.attempts += 1
            if self.attempts <= self.refusals:
                raise FakeRpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "client 'etl-service' may create 2 new tokens per second (burst 10); retry in 0.05 s",
                    (("retry-after-ms", str(self.retry_after_ms)),),
                )
            columns = [vault_pb2.TokenColumn(tokens=[f"tok_{v}" for v in c.values]) for c in request.columns]
            return vault_pb2.TokenizeResponse(columns=columns)

        return tokenize


def test_a_metered_tokenize_waits_out_the_retry_after_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    channel = MeteredChannel(refusals=3)
    with caplog.at_level(logging.INFO, logger="etl_service"):
        ips, devices = GrpcTokenizer(channel).tokenize(["10.0.0.1"], ["dev-1"])  # type: ignore[arg-type]
    assert (ips, devices) == ({"10.0.0.1": "tok_10.0.0.1"}, {"dev-1": "tok_dev-1"}) and channel.attempts == 4
    waits = [r for r in caplog.records if r.getMessage() == "vault quota reached: waiting its retry-after"]
    assert [(getattr(r, "retry_after_s", None), getattr(r, "waits", None)) for r in waits] == [(0.05, 1)]
    assert "10.0.0.1" not in caplog.text and "dev-1" not in caplog.text


def test_a_metered_batch_waits_out_the_retry_after_within_its_receive_and_spends_no_receive() -> None:
    queue, store, channel = FakeQueue(), FakeLoginStore(), MeteredChannel(refusals=3)
    processor = BatchProcessor(queue, GrpcTokenizer(channel), store, max_receive_count=1)  # type: ignore[arg-type]
    outcome = processor.process([message(1, good(1))])  # its only receive
    assert (outcome.loaded, outcome.retried, outcome.failed_dependency) == (1, 0, None)
    assert channel.attempts == 4 and not queue.dead_lettered and not queue.retry_delays


def test_past_its_wait_a_metered_batch_is_postponed_for_the_vaults_retry_after() -> None:
    queue, channel = FakeQueue(), MeteredChannel(refusals=100, retry_after_ms=50)
    tokenizer = GrpcTokenizer(channel, max_throttled_wait=0.2)  # type: ignore[arg-type]
    outcome = BatchProcessor(queue, tokenizer, FakeLoginStore()).process([message(1, good(1))])
    assert outcome.failed_dependency == "vault" and queue.retry_delays == [2] and channel.attempts == 5
    over = MeteredChannel(refusals=100, retry_after_ms=40_000)  # more than the 30 s a receive waits: at once
    assert MAX_THROTTLED_WAIT_SECONDS == 30.0
    with pytest.raises(Throttled) as raised:
        GrpcTokenizer(over).tokenize(["10.0.0.1"], [])  # type: ignore[arg-type]
    assert raised.value.retry_after == 40.0 and over.attempts == 1


def test_a_stop_ends_a_quota_wait_at_once_and_the_batch_is_postponed_for_the_retry_after() -> None:
    queue, channel = FakeQueue(), MeteredChannel(refusals=100, retry_after_ms=20_000)
    tokenizer = GrpcTokenizer(channel)  # type: ignore[arg-type]
    threading.Timer(0.1, tokenizer.stopping.set).start()
    started = time.monotonic()
    outcome = BatchProcessor(queue, tokenizer, FakeLoginStore()).process([message(1, good(1))])
    assert time.monotonic() - started < 5 and channel.attempts == 1
    assert queue.retry_delays == [20] and outcome.retry_after == 20.0 and outcome.failed_dependency == "vault"


def test_the_consumers_stop_is_the_event_the_vault_adapters_waits_end_on(tmp_path: Path) -> None:
    wired = bootstrap(EtlConfig.from_env(minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q")), queue=FakeQueue())
    try:
        assert not wired.tokenizer.stopping.is_set()
        wired.consumer.stop()
        assert wired.tokenizer.stopping.is_set()
    finally:
        wired.close()


def test_quota_waits_are_logged_once_per_period_with_how_many_there_were(caplog: pytest.LogCaptureFixture) -> None:
    # Before, each 0.1 s wait was a line: 600 lines in 4 minutes of quota (attack 20's notes).
    now = [0.0]
    on_wait = QuotaWaitLog(every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="etl_service"):
        for _ in range(100):  # 10 s of 0.1 s waits: the first is logged, the next 99 fold into the next line
            on_wait(None, 0.1)  # type: ignore[arg-type]
            now[0] += 0.1
        now[0] = 10.0
        on_wait(None, 0.1)  # type: ignore[arg-type]
    assert [getattr(r, "waits", None) for r in caplog.records] == [1, 100]


def test_a_retry_after_longer_than_the_cap_pauses_receiving_no_longer_than_the_cap() -> None:
    # Attack 20, finding 4: the database owner's replaced vault.take_call_budget answered a wait of 10^7 s,
    # the vault passed it on, and the ETL's gate did not probe again for 115 days.
    throttled = vault_status_error("RESOURCE_EXHAUSTED", "retry in 10000000.00 s", "Tokenize", 1.0e7)
    assert isinstance(throttled, Throttled) and throttled.retry_after == MAX_THROTTLED_SECONDS == 60.0
    assert "the ETL tries again after 60 s" in str(throttled)
    probes: list[float] = []
    gate = DependencyGate(lambda: probes.append(time.monotonic()))
    gate.report_failure("vault", retry_after=throttled.retry_after)
    assert gate._next_probe - time.monotonic() <= MAX_THROTTLED_SECONDS
