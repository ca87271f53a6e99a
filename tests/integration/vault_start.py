"""The vault's commands as processes of their own, with the stack's settings.

`start_service` runs `python -m vault_service` (and the test's overrides) and waits for it to
give up: used where a setting or a dependency must stop the start, with a message saying why.
`run_admin` runs `python -m vault_service.admin ARGS` as the security team runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.stack import vault_service_env

REPO = Path(__file__).resolve().parents[2]


def start_service(env: dict[str, str], **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m vault_service` and expect it to give up (it would otherwise serve)."""
    return subprocess.run(
        [sys.executable, "-m", "vault_service"],
        env={
            **vault_service_env(env),
            "TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:0",
            "TOKENVAULT_METRICS_PORT": "0",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **overrides,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_admin(env: dict[str, str], *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """`python -m vault_service.admin ARGS` with the stack's settings (and `overrides`), on a wide terminal."""
    return subprocess.run(
        [sys.executable, "-m", "vault_service.admin", *args],
        env={**vault_service_env(env), "PATH": "/usr/bin:/bin", "COLUMNS": "400", **overrides},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
