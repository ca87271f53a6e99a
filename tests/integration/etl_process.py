"""The ETL as a process of its own, as the tests that signal it, cut its dependencies or misconfigure it start it.

`start_etl` runs `python -m etl_service run` (or `drain`) with a test's environment; `wait_until_landed` waits, while
it runs, until some of the events sent landed; `exit_within` waits for its exit and, past a bound, kills it and fails
the test with its log's tail; `EtlLog` reads its JSON log as it comes, for a test that waits on a line of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import pytest

from devstack.events import OutgoingEvent
from tests.integration.etl_landings import where_each_event_landed

REPO = Path(__file__).resolve().parents[2]


def start_etl(env: Mapping[str, str], mode: str = "run", *, stdout: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """`python -m etl_service MODE` from the repository root, with `env` over this process's environment.

    Its log (standard error) is piped for the test to read; its standard output too, or `stdout` (DEVNULL).
    """
    return subprocess.Popen(
        [sys.executable, "-m", "etl_service", mode],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def wait_until_landed(
    process: subprocess.Popen[bytes], admin_dsn: str, sent: list[OutgoingEvent], count: int, seconds: float = 60
) -> None:
    """Wait until `count` of `sent` are in user_logins or the quarantine; fail if `process` exits first or
    `seconds` pass."""
    deadline = time.monotonic() + seconds
    while (landed := sum(map(len, where_each_event_landed(admin_dsn, sent)))) < count:
        assert process.poll() is None, f"the ETL exited ({process.returncode}) with {landed} of {count} events landed"
        assert time.monotonic() < deadline, f"{landed} of {count} events landed in {seconds} s"
        time.sleep(0.05)


def exit_within(process: subprocess.Popen[bytes], seconds: float, cause: str) -> bytes:
    """The log (standard error) of `process` once it exited, within `seconds`; past them it is killed and the test
    fails: "the ETL did not stop within `seconds` s of `cause`" and the log's tail."""
    try:
        return process.communicate(timeout=seconds)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        err = process.communicate()[1]
        pytest.fail(f"the ETL did not stop within {seconds} s of {cause}: " + err.decode(errors="replace")[-1500:])


class EtlLog:
    """The lines of a started ETL's log (its standard error) as they come, read by a thread of their own."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None, "the ETL's standard error is not piped"
        self._process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def said(self, message: str) -> bool:
        """Whether a JSON line of the log has the message `message`."""
        for line in list(self.lines):
            try:
                if json.loads(line).get("message") == message:
                    return True
            except (ValueError, AttributeError):
                continue
        return False

    def wait_for(self, message: str, seconds: float = 60) -> None:
        """Wait until the log says `message`; fail if the process exits first or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while not self.said(message):
            assert self._process.poll() is None, f"the ETL exited ({self._process.returncode}): {self.tail()}"
            assert time.monotonic() < deadline, f"no {message!r} in the ETL's log in {seconds} s: {self.tail()}"
            time.sleep(0.05)

    def tail(self, characters: int = 3000) -> str:
        """The end of what the log said so far, once its reader has read what the ended process left."""
        if self._process.poll() is not None:
            self._reader.join(5)
        return "".join(self.lines)[-characters:]
