"""A drain check failing on a dependency says so, and counts it (attack 14, finding 2).

A take-back whose Transit proof failed on every check (HTTP 413: OpenBao refused the request's
size) left the drain running for ever without a word: `DrainCheck.drained` swallowed the
DependencyDown. Now the first failure is a warning naming the step and the dependency, repeated
every FAILURE_LOG_SECONDS while it lasts, and `check_failures` counts every one. Over the unit fakes.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest

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
