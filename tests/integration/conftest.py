"""Every test here talks to real OpenBao, SQS and Postgres."""

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.procs import free_port, stop_pid
from devstack.services import start_vault_service
from devstack.stack import vault_service_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def start_vault_process(stack_env: dict[str, str], log_file: Path, **overrides: str) -> tuple[str, int]:
    """A vault service in a process of its own on a free port (settings `overrides`): (address, pid)."""
    address = f"127.0.0.1:{free_port()}"
    env = {
        **vault_service_env(stack_env),
        # a database of its own exports to a file of its own (own_database.py), never the session's
        **{k: stack_env[k] for k in ("TOKENVAULT_AUDIT_CHECKPOINT_FILE",) if k in stack_env},
        "TOKENVAULT_GRPC_ADDRESS": address,
        "TOKENVAULT_METRICS_PORT": "0",
        **overrides,
    }
    certs = Path(stack_env["STACK_DIR"]) / "certs"
    probe = (certs / "ca.pem", certs / "etl-service.pem", certs / "etl-service-key.pem")
    return address, start_vault_service(env, log_file, probe)


@pytest.fixture
def vault_process(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A vault service in a process of its own (so it can be frozen with SIGSTOP or killed): (address, pid)."""
    address, pid = start_vault_process(stack_env, tmp_path / "vault.log")
    try:
        yield address, pid
    finally:
        with contextlib.suppress(ProcessLookupError):  # the test may have stopped it
            os.kill(pid, signal.SIGCONT)
        stop_pid(pid)
