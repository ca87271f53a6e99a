"""Starting vault_service and etl_service as processes of the stack."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc

from devstack.isolation import python_command
from devstack.procs import spawn, wait_until
from tokenvault_client import ClientIdentity, Unavailable, VaultClient, VaultClientError
from vault_service.entrypoints.health_probe import serving

REPO = Path(__file__).resolve().parent.parent


def vault_healthy(address: str, ca: Path, cert: Path, key: Path) -> bool:
    """Whether the vault answers SERVING on grpc.health.v1 over mTLS."""
    with VaultClient.connect(address, ClientIdentity(ca, cert, key, server_name="localhost")) as client:
        try:
            client.ready()
        except Unavailable:
            return False
        return True


def start_vault_service(
    env: Mapping[str, str],
    log_file: Path,
    probe: tuple[Path, Path, Path],
    user: str | None = None,
    home: Path | None = None,
) -> int:
    """Start `python -m vault_service` (as `user` if given); wait until its health check says SERVING.

    With a health listener (TOKENVAULT_HEALTH_ADDRESS) it must answer SERVING there too.
    """
    command = python_command(user, Path(sys.prefix), "vault_service")
    pid = spawn(command, log_file, env=env, cwd=REPO, user=user, home=home)
    address = env["TOKENVAULT_GRPC_ADDRESS"]
    wait_until(lambda: vault_healthy(address, *probe), "vault_service", 60, pid, log_file)
    if health := env.get("TOKENVAULT_HEALTH_ADDRESS"):
        wait_until(lambda: _answers(health), "vault_service's health listener", 10, pid, log_file)
    return pid


def _answers(health_address: str) -> bool:
    try:
        return serving(health_address)
    except grpc.RpcError:
        return False


def start_etl_service(env: Mapping[str, str], log_file: Path, user: str | None = None, home: Path | None = None) -> int:
    """Start `python -m etl_service run` (as `user` if given; consumes the queue until stopped)."""
    return _start_until_started(("etl_service", "run"), "etl_service", 60, env, log_file, user, home)


def start_lock_watchdog(
    env: Mapping[str, str], log_file: Path, user: str | None = None, home: Path | None = None
) -> int:
    """Start `python -m vault_service.entrypoints.lock_watchdog` (as `user` if given)."""
    return _start_until_started(
        ("vault_service.entrypoints.lock_watchdog",), "lock_watchdog", 30, env, log_file, user, home
    )


def _start_until_started(
    module: tuple[str, ...],
    name: str,
    seconds: float,
    env: Mapping[str, str],
    log_file: Path,
    user: str | None,
    home: Path | None,
) -> int:
    """Spawn `python -m <module...>` and wait until its log says "started"; its PID.

    A log left by an earlier run is moved aside to `<log>.1` first: its "started" line must not pass for this one's.
    """
    if log_file.exists():
        shutil.move(log_file, log_file.with_suffix(".log.1"))
    pid = spawn(python_command(user, Path(sys.prefix), *module), log_file, env=env, cwd=REPO, user=user, home=home)
    wait_until(
        lambda: log_file.exists() and '"started"' in log_file.read_text(errors="replace"),
        name,
        seconds,
        pid,
        log_file,
    )
    return pid


def channel_error(error: VaultClientError) -> str:
    """A short description of a failed call."""
    return str(error)
