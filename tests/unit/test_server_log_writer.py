"""devstack/server_log.py: the embedded cluster's server log, rotated, its bytes as they came (review 35, R35-2)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from devstack.server_log import CHUNK, copy


def test_the_log_keeps_the_newest_bytes_as_they_came_within_its_files_and_their_size(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    written = b"".join(b"%06d \xff\xfe ERROR: \x00 line\n" % i for i in range(200_000))  # ~5 MB, not UTF-8
    read_end, write_end = os.pipe()

    def feed() -> None:  # as the postmaster: writes, then its end of the pipe closes
        os.write(write_end, written)
        os.close(write_end)

    feeder = threading.Thread(target=feed)
    feeder.start()
    copy(read_end, str(log), 256 << 10, 2)
    feeder.join()
    os.close(read_end)
    files = [tmp_path / "server.log.2", tmp_path / "server.log.1", log]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in files)
    assert all(path.stat().st_size <= 256 << 10 for path in files)
    kept = b"".join(path.read_bytes() for path in files)
    assert written.endswith(kept)  # the newest bytes, in order, unchanged
    assert len(kept) >= 2 * ((256 << 10) - CHUNK)  # each rotated file was filled to within a read of its size


def test_a_file_must_hold_a_read_and_a_rotation_keeps_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BYTES"):
        copy(0, str(tmp_path / "server.log"), CHUNK, 1)
    with pytest.raises(ValueError, match="FILES"):
        copy(0, str(tmp_path / "server.log"), 1 << 20, 0)
