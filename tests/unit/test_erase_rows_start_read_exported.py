"""The start-up read of the erase rows says how long it took and how many rows it read (review 40, R40-3).

A replica serves nothing before that read ends, and it grows with every erase row (refused Erase calls' rows too):
its time and size are exported and logged, so the start-up probe's budget can be checked against them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.test_erase_read_window import _erase_row
from vault_service.entrypoints.metrics import _VaultCollector
from vault_service.service import erased_tokens
from vault_service.service.erased_tokens import ErasedTokens
from vault_service.service.ports import EraseRowsPage
from vault_service.service.token_cache import TokenCache


class _Log:
    def __init__(self, rows: int) -> None:
        self.rows = [_erase_row(i, i.to_bytes(16, "big")) for i in range(1, rows + 1)]

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        page = [r for r in self.rows if r.record_id > after_id][:limit]
        return EraseRowsPage(page, len(self.rows), len(page) == limit)

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        pass


def _samples() -> dict[str, float]:
    tokens: Any = SimpleNamespace(races=0, merged_batches=0)
    return {s.name: s.value for family in _VaultCollector(TokenCache(0), tokens).collect() for s in family.samples}


def test_the_start_up_read_of_the_erase_rows_is_exported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    log, erased = _Log(5000), ErasedTokens()  # three pages of 2048
    with caplog.at_level(logging.INFO, logger=erased_tokens.__name__):
        erased.learn(log)
    samples = _samples()
    assert samples["tokenvault_erase_rows_start_read_rows"] == 5000
    assert samples["tokenvault_erase_rows_start_read_seconds"] > 0
    told = [r for r in caplog.records if "erase row(s) from its start" in r.getMessage()]
    assert len(told) == 1 and "5000 erase row(s)" in told[0].getMessage(), [r.getMessage() for r in caplog.records]
    log.rows.append(_erase_row(5001, b"n" * 16))
    erased.learn(log)  # a key-check round: its tail only, not a read from the start
    assert _samples()["tokenvault_erase_rows_start_read_rows"] == 5000
