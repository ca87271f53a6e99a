"""gRPC's fork support is off in the test process itself, where the stack's fixtures start initdb and the servers.

9237bc9 set GRPC_ENABLE_FORK_SUPPORT=false in devstack/__init__.py (a child crashed between fork and exec on a
closed epoll descriptor while the test process's channels were busy: grpc/grpc#43055). gRPC reads the setting when it
is imported, and tests/conftest.py imported grpc before devstack: the variable read "false" and the fork handlers
still ran in every child the suite forked (review 36, R36-1). The tests package now imports devstack first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import {first}
import tests.conftest  # what pytest imports first: the tests package, then its conftest
import os
import grpc
channel = grpc.insecure_channel("127.0.0.1:1")  # a channel busy connecting on gRPC's threads
try:
    grpc.channel_ready_future(channel).result(timeout=0.3)
except grpc.FutureTimeoutError:
    pass
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
"""
_FORK_HANDLER = "fork_posix.cc"
"""gRPC core's fork handlers, traced (GRPC_TRACE=fork): their lines come from this file."""


def _fork_handler_lines(first: str) -> list[str]:
    """gRPC's fork-handler lines of a process that imports `first`, then the suite's conftest, then forks."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}  # this process's: devstack's
    env |= {"GRPC_VERBOSITY": "debug", "GRPC_TRACE": "fork", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(first=first)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in done.stderr.splitlines() if _FORK_HANDLER in line]


def test_the_test_process_forks_with_grpc_fork_handlers_off() -> None:
    """Importing the suite's conftest as pytest does, then forking beside a busy channel: no fork handler runs. A
    process that imported grpc before it (as tests/conftest.py did devstack) runs them: the probe is not blind."""
    assert _fork_handler_lines("grpc"), "the probe saw no fork handler even with grpc imported first"
    assert _fork_handler_lines("os") == []
