"""SIGTERM and SIGHUP stop an admin command as Ctrl-C does, so its audit round runs (review 18, R18-2); when the
work fails or is stopped, the round's outcome is still reported by id (R18-1)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from vault_service.adapters.operator_identity import OperatorIdentity
from vault_service.config import VaultServiceConfig
from vault_service.domain.errors import VaultError
from vault_service.entrypoints import admin_session
from vault_service.entrypoints.admin_session import Stopped, exit_status, stop_on_signals
from vault_service.service.own_rows_round import OwnRowsRound


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminating_signal_raises_in_the_command_and_the_handlers_are_put_back(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(Stopped) as stopped, stop_on_signals():
        os.kill(os.getpid(), sig)
        signal.sigtimedwait([], 0.01)  # let the handler run
    assert str(stopped.value) == sig.name and exit_status(stopped.value) == 128 + sig
    assert signal.getsignal(sig) == before
    assert exit_status(KeyboardInterrupt()) == 130


def test_a_command_run_off_the_main_thread_keeps_the_handlers() -> None:
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with stop_on_signals():
                pass
        except BaseException as error:  # signal.signal raises ValueError off the main thread
            failed.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert failed == []


class _Wired:
    """Bootstrapped as the session uses it: a rotation whose work the test runs, and a round that fails."""

    def __init__(self, outcome: OwnRowsRound) -> None:
        self.outcome, self.closed = outcome, False

    def rotation(self, actor: str, before_work: Callable[[], None], liveness: object = None) -> str:
        return actor

    def anchor_own_rows(self, checkpoint_file: Path | None) -> OwnRowsRound:
        return self.outcome

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("stop", [VaultError("the vault database refused the operation"), Stopped(signal.SIGTERM)])
def test_when_the_work_fails_or_is_stopped_the_rounds_outcome_is_still_reported_by_id(
    stop: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """R18-1: the exit round ran, but a failed work's error was all that left; its outcome went unsaid."""
    wired = _Wired(OwnRowsRound((41, 42), failure="interrupted: SIGTERM"))
    monkeypatch.setattr(admin_session, "bootstrap", lambda config: wired)
    operator = cast(OperatorIdentity, SimpleNamespace(actor="vault:security"))
    config = cast(
        VaultServiceConfig,
        SimpleNamespace(
            audit_checkpoint_file=None, database_conninfo="postgresql://unused", db_synchronous_commit="on"
        ),
    )
    with pytest.raises(type(stop)), admin_session.administration(config, operator):
        raise stop
    said = capsys.readouterr().err
    assert "the command did not run to its end, but its audit rows 41, 42 could not be checked" in said
    assert "(interrupted: SIGTERM)" in said and wired.closed
