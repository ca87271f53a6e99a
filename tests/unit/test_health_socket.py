"""The health listener's Unix socket: created where only the service's uid reaches it, or the start is refused.

Attack 21, F4: on a TCP port any neighbour flooded the certificate-less listener. On a Unix socket
the directory's owner and mode decide who reaches it, so a directory open to others, one another
uid owns (it could swap the socket), a symlink, or another file at the socket's path stop the start.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tokenvault_common.env import ConfigError, EnvReader
from tokenvault_common.health import ListingHealthServicer
from vault_service.config import read_health_address
from vault_service.entrypoints.health_listener import create_health_server
from vault_service.entrypoints.health_probe import main as probe_main
from vault_service.entrypoints.health_socket import UnsafeHealthSocket, prepare


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket's path holds 107 bytes; pytest's tmp_path can be longer)."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="tvh-"))
    yield directory
    for path in sorted(directory.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    directory.rmdir()


def _statuses() -> ListingHealthServicer:
    statuses = ListingHealthServicer()
    statuses.set("", health_pb2.HealthCheckResponse.SERVING)
    return statuses


def test_the_listener_serves_probes_on_a_socket_of_its_uid_alone(short_dir: Path) -> None:
    socket_path = short_dir / "health" / "health.sock"
    listener, _ = create_health_server(_statuses(), f"unix:{socket_path}")
    listener.start()
    try:
        assert (socket_path.parent.stat().st_mode & 0o777, socket_path.stat().st_mode & 0o777) == (0o700, 0o600)
        assert probe_main(["--address", f"unix:{socket_path}"]) == 0
        assert probe_main(["--address", f"unix:{socket_path}", "--service", "unknown"]) == 1
    finally:
        listener.stop(0).wait()


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o777])
def test_a_directory_open_to_group_or_others_is_refused(short_dir: Path, mode: int) -> None:
    directory = short_dir / "health"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(UnsafeHealthSocket, match="open to group or others"):
        create_health_server(_statuses(), f"unix:{directory / 'health.sock'}")
    assert not (directory / "health.sock").exists()


def test_a_symlinked_directory_or_socket_path_is_refused(short_dir: Path) -> None:
    elsewhere = short_dir / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (short_dir / "link").symlink_to(elsewhere)
    with pytest.raises(UnsafeHealthSocket, match="not a directory"):
        prepare(short_dir / "link" / "health.sock")
    (elsewhere / "health.sock").symlink_to(short_dir / "target")
    with pytest.raises(UnsafeHealthSocket, match="not a socket of this uid"):
        prepare(elsewhere / "health.sock")
    (elsewhere / "health.sock").unlink()
    (elsewhere / "health.sock").write_text("")
    with pytest.raises(UnsafeHealthSocket, match="not a socket of this uid"):
        prepare(elsewhere / "health.sock")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another uid takes root")
def test_a_directory_another_uid_owns_is_refused(short_dir: Path) -> None:
    directory = short_dir / "health"
    directory.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(UnsafeHealthSocket, match=f"belongs to uid {nobody.pw_uid}"):
        prepare(directory / "health.sock")


def test_a_stale_socket_is_replaced_and_a_served_one_refused(short_dir: Path) -> None:
    directory = short_dir / "health"
    directory.mkdir(mode=0o700)
    path = directory / "health.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a killed process leaves
    prepare(path)
    assert not path.exists()
    with socket.socket(socket.AF_UNIX) as served:
        served.bind(str(path))
        served.listen()
        with pytest.raises(UnsafeHealthSocket, match="already listens"):
            prepare(path)


def _health_address(**env: str) -> str | None:
    read = EnvReader(env)
    address = read_health_address(read)
    read.check("vault_service")
    return address


def test_a_tcp_health_address_needs_an_explicit_opt_in() -> None:
    with pytest.raises(ConfigError, match="TOKENVAULT_HEALTH_TCP=allow"):
        _health_address(TOKENVAULT_HEALTH_ADDRESS="0.0.0.0:8086")
    assert _health_address(TOKENVAULT_HEALTH_ADDRESS="0.0.0.0:8086", TOKENVAULT_HEALTH_TCP="allow") == "0.0.0.0:8086"
    assert _health_address(TOKENVAULT_HEALTH_ADDRESS="unix:/tmp/h/health.sock") == "unix:/tmp/h/health.sock"
    with pytest.raises(ConfigError, match="absolute path"):
        _health_address(TOKENVAULT_HEALTH_ADDRESS="unix:health.sock")
    with pytest.raises(ConfigError, match="longer than"):
        _health_address(TOKENVAULT_HEALTH_ADDRESS="unix:/" + "x" * 120)
    with pytest.raises(ConfigError, match="TOKENVAULT_HEALTH_TCP must be allow"):
        _health_address(TOKENVAULT_HEALTH_ADDRESS="unix:/tmp/h/health.sock", TOKENVAULT_HEALTH_TCP="yes")
