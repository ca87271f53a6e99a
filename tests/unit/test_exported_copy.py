"""Reading the exported copy of the audit checkpoints (attack 17, finding 5): the forms a log pipeline stores the
lines in are read, and a line that looks like a checkpoint but cannot be read refuses the whole copy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.service.exported_copy import UnreadableExportedCopy, read_exported_copy

_CHECKPOINT = Checkpoint(ChainHead(7, b"\x01" * 32, 7, datetime(2026, 12, 4, 13, 55, tzinfo=UTC)), "k", "vault:v1:c2ln")
_LINE = json.dumps(_CHECKPOINT.exported())
_LOG_LINE = json.dumps({"message": "audit checkpoint", "level": "INFO", "audit_checkpoint": _CHECKPOINT.exported()})


@pytest.mark.parametrize(
    "line",
    [
        _LINE,
        _LOG_LINE,
        json.dumps({"log": _LINE + "\n", "stream": "stdout", "time": "2026-12-04T13:55:00Z"}),  # Docker json-file
        json.dumps({"log": _LOG_LINE, "stream": "stdout"}),  # Fluent Bit tailing the vault's log
        json.dumps({"message": _LOG_LINE, "source_type": "kubernetes_logs"}),  # Vector
        json.dumps({"log": json.loads(_LOG_LINE)}),  # a shipper that parsed the line already
        json.dumps({"message": json.dumps({"log": _LINE})}),  # Vector forwarding Docker's file
    ],
    ids=["file", "vault log", "docker", "fluent bit", "vector", "parsed", "twice"],
)
def test_every_accepted_form_yields_the_checkpoint(tmp_path: Path, line: str) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_text(f'{{"message": "stack up"}}\nnot json\n{line}\n\n')
    read = read_exported_copy(copy)
    assert read.checkpoints == (_CHECKPOINT,) and read.newest == _CHECKPOINT
    assert read.wrapped == (line not in (_LINE, _LOG_LINE))
    assert f"1 exported checkpoint(s) read from {copy}, newest at row 7 (2026-12-04T13:55:00+00:00)" in read.summary()


@pytest.mark.parametrize(
    "line",
    [
        _LINE[: len(_LINE) // 2],  # cut short
        json.dumps({"msg": _LINE}),  # a wrapper field not accepted
        _LINE.replace('"head_id": 7', '"head_id": "seven"'),
        json.dumps({**_CHECKPOINT.exported(), "head_hash": "not hex"}),
    ],
    ids=["cut short", "other wrapper", "bad id", "bad hash"],
)
def test_a_line_that_looks_like_a_checkpoint_but_cannot_be_read_refuses_the_copy(tmp_path: Path, line: str) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_text(f"{_LINE}\n{line}\n")
    with pytest.raises(UnreadableExportedCopy, match=r"1 line\(s\) look like exported checkpoints .*\(line 2\)"):
        read_exported_copy(copy)


def _cri(stream: str, tag: str, text: str) -> str:
    """One line as the kubelet stores a container's output (CRI log format)."""
    return f"2026-12-04T13:55:00.123456789Z {stream} {tag} {text}\n"


def test_the_kubelets_cri_log_lines_yield_the_checkpoint_with_split_lines_joined(tmp_path: Path) -> None:
    """The shipped Kubernetes deployment exports checkpoints only as the vault's log lines; on the node they are CRI."""
    copy = tmp_path / "0.log"
    half = len(_LOG_LINE) // 2
    copy.write_text(
        _cri("stdout", "F", '{"message": "stack up"}')
        + _cri("stdout", "P", _LOG_LINE[:half])  # a line longer than the runtime's buffer, split
        + _cri("stderr", "F", "a warning between the parts")
        + _cri("stdout", "F", _LOG_LINE[half:])
        + _cri("stdout", "F", _LOG_LINE)
    )
    read = read_exported_copy(copy)
    assert read.checkpoints == (_CHECKPOINT, _CHECKPOINT) and read.wrapped == 2


def test_a_cri_line_split_and_never_ended_refuses_the_copy(tmp_path: Path) -> None:
    copy = tmp_path / "0.log"
    copy.write_text(_cri("stdout", "F", _LOG_LINE) + _cri("stdout", "P", _LOG_LINE[: len(_LOG_LINE) // 2]))
    with pytest.raises(UnreadableExportedCopy, match=r"\(line 2\)"):
        read_exported_copy(copy)


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({"message": "session settings", "in_effect": ["x.head_id", "audit_checkpoint.y"]}),
        json.dumps({"message": "a role default named x.head_id was found", "level": "WARNING"}),
        json.dumps({"log": json.dumps({"message": "settings", "in_effect": ["x.head_id"]}), "stream": "stderr"}),
        "plain text naming head_id and audit_checkpoint, not JSON",
    ],
    ids=["setting names", "message text", "wrapped", "not json"],
)
def test_text_the_database_owner_controls_naming_a_checkpoints_keys_is_no_checkpoint(tmp_path: Path, line: str) -> None:
    """A role default's name is logged at start (retest 17, finding C): it must not make every copy unreadable."""
    copy = tmp_path / "vault.log"
    copy.write_text(f"{line}\n{_LOG_LINE}\n")
    assert read_exported_copy(copy).checkpoints == (_CHECKPOINT,)


def test_a_checkpoints_keys_in_a_wrapper_not_accepted_still_refuse_the_copy(tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_text(f"{_LINE}\n" + json.dumps({"event": {"original": _LOG_LINE}}) + "\n")
    with pytest.raises(UnreadableExportedCopy, match=r"\(line 2\)"):
        read_exported_copy(copy)
