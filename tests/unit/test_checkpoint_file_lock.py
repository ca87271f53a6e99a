"""The checkpoint file's lock bounds its wait: a reader holding it cannot stop the vault's appends (review 50, R50-1).

`flock` needs only a descriptor of the file: whoever may read the evidence file (a log shipper, a person) can take
its exclusive lock. The append waited for it without a bound, so the audit upkeep hung at its next checkpoint and,
after the audit bound, every reveal was refused for as long as the lock was held. A real file and real locks here.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from vault_service.service import checkpoint_export
from vault_service.service.checkpoint_export import _appended_line


def _append_in_a_thread(path: Path, line: str) -> threading.Thread:
    thread = threading.Thread(target=_appended_line, args=(path, line, True), daemon=True)
    thread.start()
    return thread


def test_a_lock_a_reader_holds_for_good_delays_the_append_by_its_bound_only(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.jsonl"
    path.write_text('{"head_id": 1}\n')
    reader = os.open(path, os.O_RDONLY)  # read access is all flock needs
    try:
        fcntl.flock(reader, fcntl.LOCK_EX)
        started = time.monotonic()
        thread = _append_in_a_thread(path, '{"head_id": 2}')
        thread.join(10)
        assert not thread.is_alive(), "the append waited for a lock a reader holds, without a bound"
        assert time.monotonic() - started >= checkpoint_export.LOCK_WAIT_SECONDS
    finally:
        os.close(reader)
    assert [json.loads(line)["head_id"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_writer_holding_the_lock_for_its_line_is_waited_for(tmp_path: Path) -> None:
    """The lock still orders the writers: a line another writer is appending is ended before this one."""
    path = tmp_path / "checkpoints.jsonl"
    path.write_text('{"head_id": 1}\n')
    writer = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(writer, fcntl.LOCK_EX)
        thread = _append_in_a_thread(path, '{"head_id": 3}')
        os.write(writer, b'{"head_id": ')  # the other writer's line, in two writes under its lock
        time.sleep(0.3)
        assert thread.is_alive(), "the append did not wait for the writer's lock"
        os.write(writer, b"2}\n")
        fcntl.flock(writer, fcntl.LOCK_UN)
        thread.join(5)
        assert not thread.is_alive()
    finally:
        os.close(writer)
    assert [json.loads(line)["head_id"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_a_file_system_without_locks_is_appended_to_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 50, R50-4: flock refused (NFS `nolock`, FUSE: ENOLCK) failed every append - reveals stopped after the
    audit bound - where the file was written before V50-1 took the lock. flock refused here as such a mount does."""

    def no_locks(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    path = tmp_path / "checkpoints.jsonl"
    path.write_text('{"head_id": 1}\n')
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert _appended_line(path, '{"head_id": 2}', True) is None
    assert [json.loads(line)["head_id"] for line in path.read_text().splitlines()] == [1, 2]
