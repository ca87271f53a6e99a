"""Review 32, F6: the admin command serves nothing, so its Job is issued no server certificate.

The vault service still requires TOKENVAULT_TLS_CERT and TOKENVAULT_TLS_KEY; the admin command reads its
settings without them (VaultServiceConfig.from_env(..., serving=False)) and goes on to its work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.vault_settings import vault_env
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig

SERVER_FILES = ("TOKENVAULT_TLS_CERT", "TOKENVAULT_TLS_KEY")


def _without_server_certificate(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in vault_env(tmp_path).items() if k not in SERVER_FILES}


def test_the_vault_requires_its_server_certificate_and_the_admin_settings_do_not(tmp_path: Path) -> None:
    env = _without_server_certificate(tmp_path)
    with pytest.raises(ConfigError) as error:
        VaultServiceConfig.from_env(env)
    assert all(f"{name} is required" in str(error.value) for name in SERVER_FILES), error.value
    VaultServiceConfig.from_env(env, serving=False)
    with pytest.raises(ConfigError, match=r"missing\.pem, which is not a file"):  # given, still checked
        VaultServiceConfig.from_env({**env, "TOKENVAULT_TLS_CERT": str(tmp_path / "missing.pem")}, serving=False)


def test_the_admin_command_runs_without_a_server_certificate(tmp_path: Path) -> None:
    """It gets past its settings (exit 2 names them) to the database, here a closed port."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TOKENVAULT_", "VAULT_"))},
        **_without_server_certificate(tmp_path),
        "TOKENVAULT_DATABASE_DSN": "postgresql://vault@127.0.0.1:1/tokenvault?require_auth=scram-sha-256&connect_timeout=2",
        "TOKENVAULT_VAULT_ADDR": "http://127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "vault_service.admin", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "TOKENVAULT_TLS_CERT" not in done.stderr and done.returncode != 2, (done.returncode, done.stderr[-2000:])
