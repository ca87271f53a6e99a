"""Configuration errors a person can act on; generated code is fresh."""

import subprocess
import sys
from pathlib import Path

import pytest

from etl_service.config import EtlConfig
from tests.unit.etl_builders import minimal_etl_env
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


def test_an_exercise_style_queue_url_implies_its_endpoint_and_dlq(tmp_path: Path) -> None:
    config = EtlConfig.from_env(minimal_etl_env(tmp_path, "http://localhost:4566/000000000000/login-queue"))
    assert config.sqs_endpoint_url == "http://localhost:4566"
    assert config.dlq_url == "http://localhost:4566/000000000000/login-queue-dlq"


def test_an_aws_queue_url_keeps_the_default_endpoint(tmp_path: Path) -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue"
    assert EtlConfig.from_env(minimal_etl_env(tmp_path, url)).sqs_endpoint_url is None


def test_in_flight_bound_below_the_batch_size_is_refused(tmp_path: Path) -> None:
    env = {**minimal_etl_env(tmp_path, "http://q/1/q"), "ETL_BATCH_SIZE": "500", "ETL_MAX_IN_FLIGHT": "100"}
    with pytest.raises(ConfigError, match="ETL_MAX_IN_FLIGHT"):
        EtlConfig.from_env(env)


def test_dead_letters_keep_sealed_bodies_unless_the_operator_opts_out(tmp_path: Path) -> None:
    env = minimal_etl_env(tmp_path, "http://q/1/q")
    assert EtlConfig.from_env(env).dlq_bodies == "discard"  # the explicit opt-out
    sealed = {k: v for k, v in env.items() if k != "ETL_DLQ_BODIES"}
    with pytest.raises(ConfigError, match=r"ETL_DLQ_SEAL_VAULT_ADDR is required .* set ETL_DLQ_BODIES=discard"):
        EtlConfig.from_env(sealed)  # the default keeps bodies: without sealing settings, no start
    secret = tmp_path / "secret-id"
    secret.write_text("s")
    settings = {"ETL_DLQ_SEAL_VAULT_ADDR": "https://bao:8200", "ETL_DLQ_SEAL_ROLE_ID": "r"}
    config = EtlConfig.from_env({**sealed, **settings, "ETL_DLQ_SEAL_SECRET_ID_FILE": str(secret)})
    assert (config.dlq_bodies, config.dlq_seal_vault_addr) == ("sealed", "https://bao:8200")
    with pytest.raises(ConfigError, match="ETL_DLQ_BODIES=discard contradicts"):
        EtlConfig.from_env({**env, **settings, "ETL_DLQ_SEAL_SECRET_ID_FILE": str(secret)})
    with pytest.raises(ConfigError, match="ETL_DLQ_BODIES must be sealed or discard"):
        EtlConfig.from_env({**env, "ETL_DLQ_BODIES": "clear"})


def test_the_etl_without_sealing_settings_refuses_to_start_saying_how_to_opt_out(tmp_path: Path) -> None:
    env = {k: v for k, v in minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q").items() if k != "ETL_DLQ_BODIES"}
    result = subprocess.run(
        [sys.executable, "-m", "etl_service", "run"],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2  # invalid settings: before any dependency is contacted
    assert "ETL_DLQ_SEAL_VAULT_ADDR is required" in result.stderr and "ETL_DLQ_BODIES=discard" in result.stderr


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
