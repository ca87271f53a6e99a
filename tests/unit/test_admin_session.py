"""SIGTERM and SIGHUP stop an admin command as Ctrl-C does, so its audit round runs (review 18, R18-2)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from vault_service.entrypoints.admin_session import Stopped, exit_status, stop_on_signals


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
