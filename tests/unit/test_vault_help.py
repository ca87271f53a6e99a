"""`python -m vault_service --help` documents every setting the service reads, and starts nothing.

It ignored its arguments: with the service's settings in place (`kubectl exec deploy/vault-service
-- python -m vault_service --help`) it logged in to Vault, opened the database and tried to
serve; without them it printed the missing settings and exited 2 (documentation walk,
4 December). As `python -m etl_service --help` does, it now prints each setting from the field
docstrings of vault_service/config.py, and the exit status.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from vault_service.config import VaultServiceConfig

REPO = Path(__file__).resolve().parents[2]


def _vault_service(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin"}  # no TOKENVAULT_* setting: nothing to start with
    return subprocess.run(
        [sys.executable, "-m", "vault_service", *args], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60
    )


def test_help_names_every_setting_the_config_reads_and_the_exit_status() -> None:
    done = _vault_service("--help")
    assert done.returncode == 0, done.stderr
    source = (REPO / "vault_service" / "config.py").read_text()
    read = set(re.findall(r'read\.\w+\(\s*"(TOKENVAULT_[A-Z_]+)"', source))
    assert len(read) > 20
    assert sorted(name for name in read if name not in done.stdout) == []
    assert "exit status:" in done.stdout, done.stdout
    fields = [f.name for f in dataclasses.fields(VaultServiceConfig) if "_" in f.name]
    assert [name for name in fields if re.search(rf"\b{name}\b", done.stdout)] == []


def test_an_unknown_argument_is_refused_not_ignored() -> None:
    done = _vault_service("--port", "50051")
    assert done.returncode == 2
    assert "unrecognized arguments: --port 50051" in done.stderr, done.stderr
