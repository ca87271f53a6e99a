"""A migration lock timeout PostgreSQL would read as milliseconds is refused before anything is done (R36-9, N3).

MIGRATIONS_LOCK_TIMEOUT (and --lock-timeout) is PostgreSQL's lock_timeout, which reads a bare number as
milliseconds: `MIGRATIONS_LOCK_TIMEOUT=3`, meant as 3 seconds, made every file wait 3 ms for its locks, and a
migration of a busy table gave up at once, three times, and stopped the release (review 36, R36-9). PostgreSQL's
integer parser also takes a decimal, a sign, hex or an exponent, all as milliseconds (`2.5` -> 2 ms, `+3`, `3.0`,
`0x10` -> 16 ms, `1e3`; attack 35, N3). The runner takes only a whole number with a unit (ms, s, min, h, d) or 0,
and refuses anything else (exit 2 from the command line, with an example), before it connects.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenvault_common.migrations import _LOCK_TIMEOUT_SPELLING, BadLockTimeout, migrate

NOWHERE = "host=/nonexistent-r36 dbname=tokenvault connect_timeout=1"
"""A DSN no server answers: the refusal must come before any connection."""


@pytest.mark.parametrize("timeout", ["3", " 250 ", "2.5", "+3", "3.0", "0x10", "1e3", "3.5s", "-1s", "s", "3 sec", ""])
def test_a_lock_timeout_postgresql_would_read_as_milliseconds_is_refused_before_connecting(timeout: str) -> None:
    with pytest.raises(BadLockTimeout, match=r"not a whole number followed by a unit .*say 3s"):
        migrate(NOWHERE, lock_timeout=timeout)


@pytest.mark.parametrize("timeout", ["3s", "500ms", " 2 min ", "1h", "1d", "0"])
def test_a_whole_number_with_a_unit_or_zero_is_taken(timeout: str) -> None:
    assert _LOCK_TIMEOUT_SPELLING.fullmatch(timeout)


def test_the_command_line_refuses_it_with_exit_2_and_an_example() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tokenvault_common.migrations", "--dsn", NOWHERE, "--lock-timeout", "2.5"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    assert run.returncode == 2, run.stderr
    assert "say 3s" in run.stderr and "nothing was done" in run.stderr
