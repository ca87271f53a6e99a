"""`make up` stops, naming the fix, in a stack directory another local account could change (walk44, W44-4).

Root's `make run` in a clone owned by another account started the whole stack without a word; its CA,
certificates and stack.env then lived where that account may rename or replace them (the services read
them), and every `tokenvault` command the summary printed was refused (tokenvault_common/trusted_files.py).
`devstack up` now applies that rule first and starts nothing. Real directories, the real command's main.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import cli
from devstack.stack import down

NOBODY = 65534


@pytest.fixture
def stack_dirs(tmp_path: Path) -> Iterator[Path]:
    """A directory for the test's stacks; any stack an old `up` started in it is stopped afterwards."""
    tmp_path.chmod(0o755)
    yield tmp_path
    for state in tmp_path.glob("**/state.json"):
        down(state.parent)


def up(state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setenv("TOKENVAULT_STACK_DIR", str(state_dir))
    code = cli.main(["up"])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_a_stack_directory_in_a_directory_others_may_write_is_refused_and_nothing_starts(
    stack_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clone = stack_dirs / "clone"
    clone.mkdir()
    clone.chmod(0o777)  # not sticky: anyone may rename .stack and put one of theirs in its place
    code, said = up(clone / ".stack", monkeypatch, capsys)
    assert code == 1, said
    assert f"{clone} may be written by others" in said and f"`chmod go-w {clone}`" in said, said
    assert "nothing was started" in said
    assert not (clone / ".stack").exists()  # the directory it made for the stack is removed again


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another account needs root")
def test_root_in_a_clone_owned_by_another_account_is_told_to_run_make_as_that_account(
    stack_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clone = stack_dirs / "clone"
    clone.mkdir(mode=0o755)
    os.chown(clone, NOBODY, NOBODY)
    code, said = up(clone / ".stack", monkeypatch, capsys)
    assert code == 1, said
    assert f"{clone} is owned by" in said and f"(uid {NOBODY})" in said, said
    assert "Run make as the account that owns the clone" in said and "nothing was started" in said
    assert not (clone / ".stack").exists()
    # A stack directory of root's whose stack.env another account owns (left by its `make down`, say): also
    # refused before the stack is restarted.
    mine = stack_dirs / "mine" / ".stack"
    mine.mkdir(parents=True, mode=0o755)
    (mine / "state.json").write_text(json.dumps({"pids": {}, "postgres": {}}))
    (mine / "stack.env").write_text("TOKENVAULT_GRPC_ADDRESS=127.0.0.1:1\n")
    os.chown(mine / "stack.env", NOBODY, NOBODY)
    code, said = up(mine, monkeypatch, capsys)
    assert code == 1 and f"the stack's {mine / 'stack.env'} is refused" in said, said
    assert said.startswith("stack not restarted: ") and "Run make as" not in said
