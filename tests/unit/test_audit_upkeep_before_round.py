"""The upkeep thread runs its `before_round` step (the chain lock's watch) before each round, whatever it raises."""

from __future__ import annotations

import logging
import time

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeCheckpointStore, upkeep_with
from vault_service.domain.checkpoints import Checkpoint
from vault_service.service.metering import TokenizeMeter


def test_a_failing_before_round_step_is_logged_and_every_round_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []
    exported: list[Checkpoint] = []
    store = FakeCheckpointStore()
    store.head_id = 3

    def failing_watch() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("the database refused the lock check")

    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), exported, [], interval=0.02, before_round=failing_watch
    )
    with caplog.at_level(logging.WARNING):
        upkeep.start()
        deadline = time.monotonic() + 5
        while (len(calls) < 3 or not exported) and time.monotonic() < deadline:
            time.sleep(0.01)
        upkeep.stop()
    assert len(calls) >= 3  # once per round of the thread
    assert exported  # the rounds ran all the same
    assert "the check for sessions holding the audit chain's lock failed" in caplog.text
    assert "refused the lock check" not in caplog.text  # its type only, never its message
