"""Root's writes into a directory another user owns do not follow what was planted there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.planted_links import write_in_foreign_dir
from devstack.procs import StackError


def test_a_plain_file_is_written_appended_and_created_private(tmp_path: Path) -> None:
    target = tmp_path / "settings.conf"
    write_in_foreign_dir(target, "a = 1\n", new=True)
    write_in_foreign_dir(target, "b = 2\n", append=True)
    assert target.read_text() == "a = 1\nb = 2\n"
    assert target.stat().st_mode & 0o777 == 0o600
    write_in_foreign_dir(target, "c = 3\n")
    assert target.read_text() == "c = 3\n"


@pytest.mark.parametrize("append", [False, True])
def test_a_symbolic_link_is_refused_and_its_target_left_alone(tmp_path: Path, append: bool) -> None:
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(StackError, match="refusing to write"):
        write_in_foreign_dir(tmp_path / "planted", "x\n", append=append)
    assert victim.read_text() == "mine\n"


def test_a_dangling_link_is_refused_and_nothing_is_created_through_it(tmp_path: Path) -> None:
    (tmp_path / "planted").symlink_to(tmp_path / "would-be-created")
    with pytest.raises(StackError, match="refusing to write"):
        write_in_foreign_dir(tmp_path / "planted", "x\n")
    assert not (tmp_path / "would-be-created").exists()


def test_a_second_name_of_another_file_is_refused_before_anything_is_truncated(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    os.link(victim, tmp_path / "planted")
    with pytest.raises(StackError, match="one name"):
        write_in_foreign_dir(tmp_path / "planted", "x\n")
    assert victim.read_text() == "mine\n"


def test_a_file_that_must_be_new_is_refused_when_anything_is_there(tmp_path: Path) -> None:
    (tmp_path / "admin-password").write_text("planted\n")
    with pytest.raises(StackError, match="refusing to write"):
        write_in_foreign_dir(tmp_path / "admin-password", "secret", new=True)


def test_a_planted_fifo_is_refused_without_waiting_for_a_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "audit.hcl")
    with pytest.raises(StackError, match="refusing to write"):
        write_in_foreign_dir(tmp_path / "audit.hcl", "x\n")
