"""Reading the embedded cluster's server log right after a statement that logs.

The postmaster's output reaches `$PGDATA/server.log` through devstack's log writer (devstack/server_log.py, review 35,
R35-2): a pipe, so a line may land a moment after the statement that logged it returned. A test waits for the line
it expects (and only then looks for what must be absent: everything logged before it is written before it).
"""

from __future__ import annotations

import time
from pathlib import Path

WAIT_SECONDS = 5.0


def logged_once(log: Path, *expected: str, since: int = 0) -> str:
    """The log's text from byte `since` once one of `expected` is in it, or as it is after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        text = log.read_bytes()[since:].decode(errors="replace")
        if any(line in text for line in expected) or time.monotonic() > deadline:
            return text
        time.sleep(0.02)
