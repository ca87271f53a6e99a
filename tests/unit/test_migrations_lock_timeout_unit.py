"""A migration lock timeout given without a unit is refused before anything is done (review 36, R36-9).

MIGRATIONS_LOCK_TIMEOUT (and --lock-timeout) is PostgreSQL's lock_timeout, which reads a bare number as
milliseconds: `MIGRATIONS_LOCK_TIMEOUT=3`, meant as 3 seconds, made every file wait 3 ms for its locks, and a
migration of a busy table gave up at once, three times, and stopped the release. The runner now refuses it (exit 2
from the command line), before it connects.
"""

from __future__ import annotations

import pytest

from tokenvault_common.migrations import BadLockTimeout, migrate

NOWHERE = "host=/nonexistent-r36 dbname=tokenvault connect_timeout=1"
"""A DSN no server answers: the refusal must come before any connection."""


@pytest.mark.parametrize("timeout", ["3", " 250 "])
def test_a_lock_timeout_without_a_unit_is_refused_before_connecting(timeout: str) -> None:
    with pytest.raises(BadLockTimeout, match="has no unit"):
        migrate(NOWHERE, lock_timeout=timeout)
