"""The vault service's health listener on a Unix socket: probes answer, no other uid connects, unsafe is refused.

Attack 21, F4 / review 21, R21-3: the certificate-less listener on a TCP port could be flooded by any
network neighbour. The shipped deployments now serve it on a socket in a 0700 directory of the
service's uid (TOKENVAULT_HEALTH_ADDRESS=unix:/path) and exec the probe module against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.procs import stop_pid
from tests.integration.conftest import start_vault_process
from tests.integration.vault_start import start_service
from vault_service.entrypoints.server import LIVENESS_SERVICE

PROBE = [sys.executable, "-m", "vault_service.entrypoints.health_probe"]
CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path holds 107 bytes, pytest's tmp_path can take more."""
    directory = Path(tempfile.mkdtemp(prefix="tvh-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _probe(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENVAULT_HEALTH_ADDRESS": f"unix:{socket_path}"}
    return subprocess.run([*PROBE, *args], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_vault_answers_probes_on_its_socket_and_another_uid_cannot_connect(
    stack_env: dict[str, str], tmp_path: Path, short_dir: Path
) -> None:
    socket_path = short_dir / "health" / "health.sock"
    _, pid = start_vault_process(stack_env, tmp_path / "vault.log", TOKENVAULT_HEALTH_ADDRESS=f"unix:{socket_path}")
    try:  # started: it answered SERVING on its socket too (devstack.services.start_vault_service)
        for service in ("", LIVENESS_SERVICE):  # readiness, liveness: as the exec probes run them
            probed = _probe(socket_path, "--service", service)
            assert probed.returncode == 0, probed.stderr
        assert socket_path.parent.stat().st_mode & 0o777 == 0o700 and socket_path.stat().st_mode & 0o777 == 0o600
        assert socket_path.parent.stat().st_uid == os.geteuid()
        python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
        own = subprocess.run([python, "-c", CONNECT, str(socket_path)], capture_output=True, text=True, check=False)
        assert own.stdout.strip() == "connected", own.stderr  # the control: this uid connects
        if os.geteuid() == 0:  # another uid: the directory keeps it out
            other = subprocess.run(
                ["runuser", "-u", "nobody", "--", python, "-c", CONNECT, str(socket_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert other.returncode != 0 and "PermissionError" in other.stderr, (other.stdout, other.stderr)
    finally:
        stop_pid(pid)


def test_a_health_socket_directory_open_to_others_stops_the_start(stack_env: dict[str, str], short_dir: Path) -> None:
    directory = short_dir / "health"
    directory.mkdir()
    directory.chmod(0o755)
    started = start_service(stack_env, TOKENVAULT_HEALTH_ADDRESS=f"unix:{directory / 'health.sock'}")
    assert started.returncode == 2, started.stderr
    assert "open to group or others (mode 0755)" in started.stderr and "TOKENVAULT_HEALTH_ADDRESS" in started.stderr
    assert not (directory / "health.sock").exists()
