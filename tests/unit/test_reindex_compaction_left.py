"""`reindex` does not say ok while rows are left to compact (attack 24, F3).

Compaction skips rows another transaction holds locked; `reindex` now goes on until none is left
and, past its wait, fails naming how many are left (a re-run compacts them). The waiting itself is
proven against PostgreSQL in tests/integration/test_next_fingerprints_under_the_pending_key.py.
"""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from vault_service.domain.errors import StorageError
from vault_service.service import rotation as rotation_module
from vault_service.service.rotation import KeyRotation


class _RowsLeftLocked:
    """A token store whose compaction moves 3 rows, then finds 1 row it can never lock."""

    def __init__(self) -> None:
        self.batches = [3]

    def compact_batch(self, active_fingerprint_id: int, limit: int, actor: str = "") -> int:
        return self.batches.pop() if self.batches else 0

    def fingerprints_left(self, active_fingerprint_id: int, up_to: int) -> int:
        return 1


def test_reindex_fails_naming_the_rows_left_when_they_stay_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rotation_module, "COMPACTION_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(rotation_module, "COMPACTION_RETRY_SECONDS", 0.05)
    none = cast(Any, None)
    job = KeyRotation(none, none, none, cast(Any, _RowsLeftLocked()), none, "admin:test")
    moved: list[int] = []
    with pytest.raises(
        StorageError, match=re.escape("1 value(s) still have their fingerprint under a retired key")
    ) as left:
        job._compact(2, 100, lambda phase, done: moved.append(done))
    assert "rows with no re-indexed fingerprint to move" in str(left.value)  # not only locks (review 23, R23-7)
    assert "run rotate-fingerprint-key and reindex" in str(left.value)
    assert moved == [3]
