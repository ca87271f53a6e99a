"""Once stopping, a service exits within its bound even when something at shutdown hangs."""

from __future__ import annotations

import subprocess
import sys
import time

HANGS_AT_EXIT = """
import threading
from tokenvault_common.exit_watchdog import exit_within
from tokenvault_common.logging_setup import configure_logging
configure_logging("etl_service", "INFO", native=True)
def closing_a_pool():
    threading.Event().wait()
exit_within(0.5)
exit_within(60)  # a second stop signal does not move the bound
threading.Thread(target=closing_a_pool, name="closer").start()  # not a daemon: the interpreter waits for it
"""

EXITS = """
from tokenvault_common.exit_watchdog import exit_within
exit_within(30)
"""


def test_a_process_hanging_at_exit_ends_at_the_bound_with_each_threads_stack() -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", HANGS_AT_EXIT], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1
    assert took < 10, f"took {took:.1f} s"
    assert "in closing_a_pool" in result.stderr
    assert "Timeout (0:00:00.500000)!" in result.stderr


def test_a_process_that_exits_on_its_own_is_not_held_by_the_bound() -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", EXITS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and time.monotonic() - started < 10
