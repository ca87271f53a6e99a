"""The admin process's last audit upkeep round over its own rows (attack 17, finding 4): what it reports when the
round names rows missing, and when it cannot run to its end (the command must not exit 0 either way)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import DatabaseUnavailable
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.own_rows_round import OwnRowsNotAnchored, OwnRowsRound, anchor_own_rows

_HEAD = ChainHead(12, b"\x02" * 32, 12, datetime(2026, 12, 4, 14, 0, tzinfo=UTC))


class _Round:
    """An upkeep whose round exports `exported`, or raises `error`."""

    def __init__(self, export: Callable[[Checkpoint], None], exported: list[Checkpoint], error: Exception | None):
        self._export, self._exported, self._error = export, exported, error

    def run_once_watched(self) -> None:
        for checkpoint in self._exported:
            self._export(checkpoint)
        if self._error is not None:
            raise self._error


def _appended(*ids: int) -> AppendedRows:
    rows = AppendedRows()
    rows.remember((i, (b"\x00" * 32, bytes([i]) * 32)) for i in ids)
    return rows


def _outcome(appended: AppendedRows, exported: list[Checkpoint], error: Exception | None = None) -> OwnRowsRound:
    return anchor_own_rows(appended, lambda export: cast(AuditUpkeep, _Round(export, exported, error)))


def test_rows_the_exported_checkpoint_names_missing_fail_the_command_by_id() -> None:
    note = Checkpoint(_HEAD, "k", "vault:v1:c2ln", (10, 11), "vault:v1:bm90ZQ==")
    outcome = _outcome(_appended(10, 11), [note])
    assert not outcome.anchored and outcome.missing == (10, 11) and outcome.exported == (note,)
    assert "its audit rows 10, 11 are not in the audit chain" in str(OwnRowsNotAnchored(outcome))


def test_a_round_that_fails_leaves_the_rows_unchecked_and_fails_the_command_naming_them() -> None:
    outcome = _outcome(_appended(10, 11), [], DatabaseUnavailable("the vault database is unavailable"))
    assert not outcome.anchored and outcome.rows == (10, 11) and outcome.missing == ()
    assert "its audit rows 10, 11 could not be checked" in str(OwnRowsNotAnchored(outcome))


def test_rows_held_by_the_chain_are_anchored_and_no_rows_need_no_round() -> None:
    assert _outcome(_appended(10), [Checkpoint(_HEAD, "k", "vault:v1:c2ln")]).anchored
    assert _outcome(_appended(), [], RuntimeError("never run")) == OwnRowsRound(())
