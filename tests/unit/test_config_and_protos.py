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
    for name in ("ETL_QUEUE_URL", "ETL_DATABASE_DSN", "ETL_VAULT_ADDRESS", "ETL_TLS_CERT"):
        assert name in message
    assert "ETL_BATCH_SIZE must be an integer" in message


def _minimal_etl_env(tmp_path: Path, queue_url: str) -> dict[str, str]:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    return {
        "ETL_QUEUE_URL": queue_url,
        "ETL_DATABASE_DSN": "postgresql://etl@db/app",
        "ETL_VAULT_ADDRESS": "vault:50051",
        **{f"ETL_TLS_{name}": str(pem) for name in ("CA", "CERT", "KEY")},
    }


def test_an_exercise_style_queue_url_implies_its_endpoint_and_dlq(tmp_path: Path) -> None:
    config = EtlConfig.from_env(_minimal_etl_env(tmp_path, "http://localhost:4566/000000000000/login-queue"))
    assert config.sqs_endpoint_url == "http://localhost:4566"
    assert config.dlq_url == "http://localhost:4566/000000000000/login-queue-dlq"


def test_an_aws_queue_url_keeps_the_default_endpoint(tmp_path: Path) -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue"
    assert EtlConfig.from_env(_minimal_etl_env(tmp_path, url)).sqs_endpoint_url is None


def test_in_flight_bound_below_the_batch_size_is_refused(tmp_path: Path) -> None:
    env = {**_minimal_etl_env(tmp_path, "http://q/1/q"), "ETL_BATCH_SIZE": "500", "ETL_MAX_IN_FLIGHT": "100"}
    with pytest.raises(ConfigError, match="ETL_MAX_IN_FLIGHT"):
        EtlConfig.from_env(env)


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
