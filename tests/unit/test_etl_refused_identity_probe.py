"""A paused ETL whose identity the vault refuses on health stops as a misconfiguration (review 20, R20-7).

Since the vault's guard checks certificates on health too, an ETL certificate that expired or was
revoked while the gate was closed makes the probe's health Check UNAUTHENTICATED. Read as "vault
down", the gate probed for ever and receiving stayed paused; it is a refused identity (DESIGN §2):
stop receiving, release, exit non-zero, say what.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from etl_service.adapters.vault_client import GrpcTokenizer
from etl_service.errors import DependencyDown, Misconfigured, vault_status_error
from tests.unit.etl_builders import consumer, messages
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.rpc_errors import FakeRpcError


class HealthAnswering:
    """A channel whose every call (the health Check among them) fails with `code`."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def unary_unary(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise FakeRpcError(self.code, "client certificate revoked")

        return call

    unary_stream = unary_unary


def test_the_probe_reads_a_refused_certificate_on_health_as_a_misconfiguration() -> None:
    refused = GrpcTokenizer(HealthAnswering(grpc.StatusCode.UNAUTHENTICATED))  # type: ignore[arg-type]
    with pytest.raises(Misconfigured, match=r"UNAUTHENTICATED.*revoked"):
        refused.ready()
    down = GrpcTokenizer(HealthAnswering(grpc.StatusCode.UNAVAILABLE))  # type: ignore[arg-type]
    with pytest.raises(DependencyDown):
        down.ready()


class RevokedWhilePaused(FakeTokenizer):
    """The vault went down (the gate closed); meanwhile the ETL's certificate was revoked."""

    def __init__(self) -> None:
        super().__init__(down=True)

    def ready(self) -> None:
        raise vault_status_error("UNAUTHENTICATED", "client certificate revoked", "health check")


def test_a_gate_probe_refused_as_a_misconfiguration_stops_the_run_non_zero() -> None:
    queue = FakeQueue()
    queue.pending = messages(20)
    c = consumer(queue, RevokedWhilePaused(), FakeLoginStore(), batch_size=10)
    raised: list[BaseException] = []

    def drain() -> None:
        try:
            c.drain()
        except Exception as error:
            raised.append(error)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    thread.join(5)
    c.stop()  # before the fix the drain waits on a closed gate for ever
    assert not thread.is_alive() and len(raised) == 1, "the ETL stayed paused"
    assert isinstance(raised[0], Misconfigured) and "UNAUTHENTICATED" in str(raised[0])
    assert "delete" not in {a for a, _ in queue.actions} and c.held == 0
