"""A metrics TLS setting that cannot work stops each service at start, saying which setting (real entrypoints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack.certs import create_metrics_certificates
from devstack.procs import free_port

REPO = Path(__file__).resolve().parents[2]


def start(module: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *module],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Placeholders for the services' other files, and a real metrics PKI."""
    placeholder = tmp_path / "x.pem"
    placeholder.write_text("x")
    create_metrics_certificates(tmp_path / "metrics")
    garbage = tmp_path / "garbage-key.pem"
    garbage.write_text("not a key")
    metrics = tmp_path / "metrics"
    return {
        "placeholder": str(placeholder),
        "cert": str(metrics / "vault-metrics.pem"),
        "key": str(metrics / "vault-metrics-key.pem"),
        "ca": str(metrics / "ca.pem"),
        "garbage": str(garbage),
    }


def vault_env(files: dict[str, str]) -> dict[str, str]:
    return {
        "TOKENVAULT_DATABASE_DSN": "postgresql://vault@127.0.0.1:9/tokenvault?require_auth=scram-sha-256",
        "TOKENVAULT_VAULT_ADDR": "http://127.0.0.1:9",
        "TOKENVAULT_VAULT_TOKEN": "dev-only",
        **{f"TOKENVAULT_{name}": files["placeholder"] for name in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA")},
        "TOKENVAULT_POLICY_FILE": str(REPO / "config" / "vault-policy.toml"),
        "TOKENVAULT_METRICS_PORT": str(free_port()),
    }


def etl_env(files: dict[str, str]) -> dict[str, str]:
    return {
        "ETL_QUEUE_URL": "http://127.0.0.1:9/000000000000/login-queue",
        "ETL_DATABASE_DSN": "postgresql://etl@127.0.0.1:9/tokenvault?require_auth=scram-sha-256",
        "ETL_VAULT_ADDRESS": "127.0.0.1:9",
        **{f"ETL_TLS_{name}": files["placeholder"] for name in ("CA", "CERT", "KEY")},
        "ETL_DLQ_BODIES": "discard",
        "ETL_METRICS_PORT": str(free_port()),
    }


def test_the_vault_with_half_the_metrics_tls_settings_stops_at_start_naming_the_missing(files: dict[str, str]) -> None:
    result = start(["vault_service"], {**vault_env(files), "TOKENVAULT_METRICS_TLS_CERT": files["cert"]})
    assert result.returncode == 2, result.stderr
    assert "TOKENVAULT_METRICS_TLS_KEY, TOKENVAULT_METRICS_TLS_CLIENT_CA not set" in result.stderr


def test_the_vault_with_a_metrics_key_that_does_not_load_stops_before_contacting_anything(
    files: dict[str, str],
) -> None:
    tls = {"TOKENVAULT_METRICS_TLS_CERT": files["cert"], "TOKENVAULT_METRICS_TLS_CLIENT_CA": files["ca"]}
    result = start(["vault_service"], {**vault_env(files), **tls, "TOKENVAULT_METRICS_TLS_KEY": files["garbage"]})
    assert result.returncode == 2, result.stderr
    assert "cannot load TOKENVAULT_METRICS_TLS_CERT" in result.stderr and "TOKENVAULT_METRICS_TLS_KEY" in result.stderr


def test_the_etl_with_half_the_metrics_tls_settings_stops_at_start_naming_the_missing(files: dict[str, str]) -> None:
    half = {"ETL_METRICS_TLS_KEY": files["key"], "ETL_METRICS_TLS_CLIENT_CA": files["ca"]}
    result = start(["etl_service", "run"], {**etl_env(files), **half})
    assert result.returncode == 2, result.stderr  # invalid settings
    assert "ETL_METRICS_TLS_CERT not set" in result.stderr


def test_the_etl_with_a_metrics_key_that_does_not_load_stops_before_contacting_anything(files: dict[str, str]) -> None:
    tls = {"ETL_METRICS_TLS_CERT": files["cert"], "ETL_METRICS_TLS_CLIENT_CA": files["ca"]}
    result = start(["etl_service", "run"], {**etl_env(files), **tls, "ETL_METRICS_TLS_KEY": files["garbage"]})
    assert result.returncode == 1, result.stderr  # cannot work as configured
    assert "cannot load ETL_METRICS_TLS_CERT" in result.stderr and "ETL_METRICS_TLS_KEY" in result.stderr


PLAIN_BEYOND_LOOPBACK = ["0.0.0.0", "::", "10.0.0.7"]  # noqa: S104 - the addresses being refused


@pytest.mark.parametrize("address", PLAIN_BEYOND_LOOPBACK)
def test_the_vault_with_plain_metrics_beyond_loopback_stops_at_start_naming_the_settings(
    files: dict[str, str], address: str
) -> None:
    result = start(["vault_service"], {**vault_env(files), "TOKENVAULT_METRICS_ADDRESS": address})
    assert result.returncode == 2, result.stderr
    for setting in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA", "PLAINTEXT=allow"):
        assert f"TOKENVAULT_METRICS_{setting}" in result.stderr


@pytest.mark.parametrize("address", PLAIN_BEYOND_LOOPBACK)
def test_the_etl_with_plain_metrics_beyond_loopback_stops_at_start_naming_the_settings(
    files: dict[str, str], address: str
) -> None:
    result = start(["etl_service", "run"], {**etl_env(files), "ETL_METRICS_ADDRESS": address})
    assert result.returncode == 2, result.stderr  # invalid settings
    for setting in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA", "PLAINTEXT=allow"):
        assert f"ETL_METRICS_{setting}" in result.stderr


def test_the_vault_with_the_private_network_opt_in_gets_past_its_settings(files: dict[str, str]) -> None:
    """Opted in, the settings pass: the start goes on, and fails only where this test has no database."""
    plain = {"TOKENVAULT_METRICS_ADDRESS": "0.0.0.0", "TOKENVAULT_METRICS_PLAINTEXT": "allow"}  # noqa: S104
    result = start(["vault_service"], {**vault_env(files), **plain})
    assert result.returncode == 1, result.stderr  # cannot start: nothing listens at the DSN / Vault address
    assert "METRICS" not in result.stderr
