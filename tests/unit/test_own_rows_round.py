"""The admin process's last audit upkeep round over its own rows (attack 17, finding 4): what it reports when the
round names rows missing, and when it cannot run to its end (the command must not exit 0 either way)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import DatabaseUnavailable
from vault_service.entrypoints.admin_session import Stopped
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.own_rows_round import (
    OwnRowsNotAnchored,
    OwnRowsRound,
    WorkRefused,
    anchor_own_rows,
    require_anchored,
)

_HEAD = ChainHead(12, b"\x02" * 32, 12, datetime(2026, 12, 4, 14, 0, tzinfo=UTC))


class _Round:
    """An upkeep whose round exports `exported` (forgetting the rows then, as `run_once`), or raises `error`."""

    def __init__(
        self,
        appended: AppendedRows,
        export: Callable[[Checkpoint], None],
        exported: list[Checkpoint],
        error: BaseException | None,
    ):
        self._appended, self._export, self._exported, self._error = appended, export, exported, error

    def run_once_watched(self) -> None:
        for checkpoint in self._exported:
            self._export(checkpoint)
        if self._error is not None:
            raise self._error
        if self._exported:
            self._appended.forget(self._appended.remembered())


def _appended(*ids: int) -> AppendedRows:
    rows = AppendedRows()
    rows.remember((i, (b"\x00" * 32, bytes([i]) * 32)) for i in ids)
    return rows


def _outcome(appended: AppendedRows, exported: list[Checkpoint], error: BaseException | None = None) -> OwnRowsRound:
    return anchor_own_rows(appended, lambda export: cast(AuditUpkeep, _Round(appended, export, exported, error)))


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


def test_a_round_interrupted_by_ctrl_c_or_sigterm_names_the_rows_it_left_unchecked() -> None:
    """R18-1: a KeyboardInterrupt left the round with a traceback and no id named."""
    for stop, said in ((KeyboardInterrupt(), "interrupted: Ctrl-C"), (Stopped(signal.SIGTERM), "interrupted: SIGTERM")):
        outcome = _outcome(_appended(10, 11), [], stop)
        assert not outcome.anchored and outcome.failure == said
        assert f"its audit rows 10, 11 could not be checked against the audit chain ({said})" in str(
            OwnRowsNotAnchored(outcome)
        )


def test_rows_checked_but_not_exported_are_not_anchored() -> None:
    """A round that checked the rows but exported no checkpoint past them (the export failing) keeps them."""
    appended = _appended(10)
    outcome = anchor_own_rows(appended, lambda export: cast(AuditUpkeep, _Round(appended, export, [], None)))
    assert not outcome.anchored and outcome.unexported == (10,)
    assert "its audit rows 10 are in the audit chain, but no checkpoint holding them could be exported" in str(
        OwnRowsNotAnchored(outcome)
    )


def test_the_work_is_refused_unless_its_intent_row_is_anchored() -> None:
    """R18-2: the intent row is anchored before the work, or nothing is done."""
    held = _outcome(_appended(10), [], DatabaseUnavailable("the vault database is unavailable"))
    try:
        require_anchored(lambda: held)
    except WorkRefused as refused:
        assert str(refused).startswith("refused before doing anything (no key or value was changed): its audit rows 10")
    else:
        raise AssertionError("the work was let start with its intent row unchecked")
    anchored = _outcome(_appended(10), [Checkpoint(_HEAD, "k", "vault:v1:c2ln")])
    assert require_anchored(lambda: anchored) is anchored
