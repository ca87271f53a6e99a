"""A drain check failing on a dependency says so, and counts it (attack 14, finding 2).

A take-back whose Transit proof failed on every check (HTTP 413: OpenBao refused the request's
size) left the drain running for ever without a word: `DrainCheck.drained` swallowed the
DependencyDown. Now the first failure is a warning naming the step and the dependency, repeated
every FAILURE_LOG_SECONDS while it lasts, and `check_failures` counts every one. Each is also
exported as `etl_drain_check_failures_total{dependency}` (review 15, finding 11: the count reached
a log field only, though the docs said "counted"). Over the unit fakes and the real metrics registry.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from etl_service.entrypoints.metrics import MetricsObserver
from etl_service.errors import DependencyDown
from etl_service.service import drain_check
from etl_service.service.drain_check import DrainCheck
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.outcomes import RunSummary
from etl_service.service.ports import TakeBack
from tests.unit.etl_builders import consumer, messages
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer


class TakeBackFailing(FakeQueue):
    """A DLQ whose first `failures` take-backs fail (OpenBao refusing the proof)."""

    def __init__(self, failures: float) -> None:
        super().__init__()
        self.failures = failures
        self.failed = 0

    def take_back_redriven(self) -> TakeBack:
        if self.failed < self.failures:
            self.failed += 1
            raise DependencyDown("OpenBao unavailable for proving dead letters: UnexpectedError", "openbao")
        return super().take_back_redriven()


def test_each_failed_check_is_counted_and_the_first_is_said_naming_step_and_dependency(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(drain_check, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(drain_check, "DEPTH_CHECK_SECONDS", 0.0)
    queue = TakeBackFailing(failures=float("inf"))
    check = DrainCheck(queue, InFlight(100), DependencyGate(lambda: None), held_wait_seconds=5)
    with caplog.at_level(logging.INFO, logger="etl_service"):
        assert not any(check.drained() for _ in range(20))
    assert check.check_failures == queue.failed == 20
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, then every FAILURE_LOG_SECONDS: no flood at each 0.5 s check
    said = warnings[0].getMessage()
    assert "taking back the DLQ's letters" in said and "OpenBao unavailable" in said and "checks again" in said
    assert warnings[0].__dict__["dependency"] == "openbao"

    now[0] += drain_check.FAILURE_LOG_SECONDS
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="etl_service"):
        check.drained()
    assert "checks again" in caplog.text  # said again while it goes on
    assert caplog.records[0].__dict__["failures"] == 21
    assert caplog.records[0].__dict__["failing_seconds"] == drain_check.FAILURE_LOG_SECONDS


def test_a_drain_whose_take_back_fails_for_a_while_says_so_and_ends_once_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = TakeBackFailing(failures=3)
    queue.pending = messages(5)
    c = consumer(queue, FakeTokenizer(), FakeLoginStore(), batch_size=10)
    result: list[RunSummary] = []
    with caplog.at_level(logging.INFO, logger="etl_service"):
        thread = threading.Thread(target=lambda: result.append(c.drain()), daemon=True)
        thread.start()
        thread.join(10)
        if thread.is_alive():
            c.stop()
            thread.join(30)
            pytest.fail("the drain did not end within 10 s")
    assert result[0].loaded == 5 and queue.failed == 3
    assert "drain check failed while taking back" in caplog.text and "drain check works again" in caplog.text


def drain_check_failures(dependency: str) -> float:
    """etl_drain_check_failures_total{dependency} as Prometheus scrapes it (0 before the first)."""
    return REGISTRY.get_sample_value("etl_drain_check_failures_total", {"dependency": dependency}) or 0.0


def test_each_failed_check_is_exported_as_a_counter_by_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain_check, "DEPTH_CHECK_SECONDS", 0.0)
    before, sqs_before = drain_check_failures("openbao"), drain_check_failures("sqs")
    queue = TakeBackFailing(failures=7)
    check = DrainCheck(queue, InFlight(100), DependencyGate(lambda: None), 5, MetricsObserver())
    assert not any(check.drained() for _ in range(7))
    assert drain_check_failures("openbao") - before == check.check_failures == 7
    assert drain_check_failures("sqs") == sqs_before
    assert check.drained()  # working again: no more counted
    assert drain_check_failures("openbao") - before == 7


def test_a_drain_exports_the_failures_of_its_checks() -> None:
    """The consumer hands its observer to the drain check: the metric of a real drain run, not of a test's wiring."""
    before = drain_check_failures("openbao")
    queue = TakeBackFailing(failures=3)
    queue.pending = messages(5)
    summary = consumer(queue, FakeTokenizer(), FakeLoginStore(), MetricsObserver(), batch_size=10).drain()
    assert summary.loaded == 5
    assert drain_check_failures("openbao") - before == queue.failed == 3
