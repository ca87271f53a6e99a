"""Walk 47, W47-25: `make up` after a refused start showed the log's last lines, most of them the killed process's.

A failed start now shows only what the process it started wrote (the log file's size is remembered at spawn).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devstack.procs import StackError, spawn, wait_until


def test_a_start_that_fails_shows_only_its_own_process_s_log_lines(tmp_path: Path) -> None:
    log_file = tmp_path / "service.log"
    log_file.write_text("".join(f"an earlier run's line {n}\n" for n in range(20)))
    pid = spawn([sys.executable, "-c", "print('cannot start: the new one'); raise SystemExit(1)"], log_file)
    with pytest.raises(StackError) as failed:
        wait_until(lambda: False, "service", 30, pid, log_file)
    said = str(failed.value)
    assert "exited during start" in said and "cannot start: the new one" in said, said
    assert "an earlier run's line" not in said, said  # before: 14 of the earlier run's lines came first
