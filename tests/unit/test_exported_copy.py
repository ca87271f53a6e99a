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
