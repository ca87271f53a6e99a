"""A named pipe or a device at the client CRL path is refused without holding the reading thread (attack 18, f. 3)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from devstack import certs
from vault_service.adapters.client_crl import RevocationList
from vault_service.adapters.client_crl_lists import InvalidRevocationList
from vault_service.adapters.crl_file import NotARegularFile, read_regular_file


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _answers_within(call: object, seconds: float) -> bool:
    done = threading.Event()

    def run() -> None:
        call()  # type: ignore[operator]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_named_pipe_put_at_the_path_is_refused_and_the_next_real_list_is_taken_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    certs.write_revocation_list(ca, [], path)
    revocations = RevocationList(path, [ca.cert], recheck_seconds=1, clock=clock)
    path.unlink()
    os.mkfifo(path)  # no writer: a blocking open would wait for ever
    clock.now = 2.0
    assert _answers_within(lambda: revocations.is_revoked("abc"), 5), "the CRL refresh blocked on a named pipe"
    assert any("named pipe" in str(getattr(r, "error", "")) for r in caplog.records if r.levelname == "ERROR")
    certs.write_revocation_list(ca, [0xABC], path)  # the CA's real list, rendered over the pipe (rename)
    clock.now = 4.0
    assert _answers_within(lambda: revocations.is_revoked("abc"), 5)
    assert revocations.is_revoked("abc"), "the real list was not taken in after the pipe"


def test_a_named_pipe_or_a_device_at_start_is_refused(tmp_path: Path) -> None:
    ca = certs.create_authority(tmp_path)
    fifo = tmp_path / "crl.pem"
    os.mkfifo(fifo)
    with pytest.raises(InvalidRevocationList, match="named pipe"):
        RevocationList(fifo, [ca.cert])
    device = tmp_path / "zero.pem"
    device.symlink_to("/dev/zero")  # read without end if read
    with pytest.raises(InvalidRevocationList, match="character device"):
        RevocationList(device, [ca.cert])


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crl.pem"
    path.write_bytes(b"x" * 2048)
    with pytest.raises(NotARegularFile, match="over the 1024"):
        read_regular_file(path, limit=1024)
    assert read_regular_file(path, limit=4096) == b"x" * 2048
