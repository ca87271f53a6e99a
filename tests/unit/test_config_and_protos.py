"""Configuration errors a person can act on; generated code is fresh."""

import subprocess
import sys
from pathlib import Path

import pytest

from etl_service.config import EtlConfig
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig

REPO = Path(__file__).resolve().parents[2]


def test_etl_config_lists_every_missing_variable_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        EtlConfig.from_env({"ETL_BATCH_SIZE": "lots"})
    message = str(error.value)
    for name in ("ETL_QUEUE_URL", "ETL_DLQ_URL", "ETL_DATABASE_DSN", "ETL_VAULT_ADDRESS", "ETL_TLS_CERT"):
        assert name in message
    assert "ETL_BATCH_SIZE must be an integer" in message


def test_vault_config_requires_credentials_and_existing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        VaultServiceConfig.from_env({"TOKENVAULT_TLS_CERT": str(tmp_path / "missing.pem")})
    message = str(error.value)
    assert "Vault credentials missing" in message
    assert "missing.pem, which is not a file" in message


def test_generated_grpc_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
