"""An OpenBao/Vault address in plain http:// to another host stops the start (attack9 Finding 7).

Over that connection go the AppRole secret id, the Vault token, every data key in clear and, from
the ETL, refused events' bodies in clear: `https://`, an `http://` loopback literal, or an explicit
`<setting>_PLAINTEXT=allow` (docker compose's private bridge) are the only ways through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_service.config import EtlConfig
from etl_service.entrypoints import dead_letters
from tests.unit.vault_settings import vault_env
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig

REMOTE_PLAIN = "http://203.0.113.10:8200"
ACCEPTED = [
    "http://127.0.0.1:8200",
    "http://[::1]:8200",
    "http://localhost:8200",
    "https://203.0.113.10:8200",
    "https://vault.vault.svc:8200",
]


def _etl_env(tmp_path: Path, address: str, **extra: str) -> dict[str, str]:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    return {
        "ETL_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue",
        "ETL_DATABASE_DSN": "postgresql://etl@db/app?require_auth=scram-sha-256",
        "ETL_VAULT_ADDRESS": "vault-service:50051",
        **{f"ETL_TLS_{name}": str(pem) for name in ("CA", "CERT", "KEY")},
        "ETL_DLQ_SEAL_VAULT_ADDR": address,
        "ETL_DLQ_SEAL_ROLE_ID": "r",
        "ETL_DLQ_SEAL_SECRET_ID_FILE": str(pem),
        **extra,
    }


def test_the_vault_service_refuses_plain_http_to_a_remote_openbao_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=REMOTE_PLAIN))
    message = str(refused.value)
    assert "TOKENVAULT_VAULT_ADDR is plain http:// to 203.0.113.10" in message
    assert "https://" in message and "TOKENVAULT_VAULT_PLAINTEXT=allow" in message


def test_the_etl_refuses_plain_http_to_a_remote_openbao_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        EtlConfig.from_env(_etl_env(tmp_path, REMOTE_PLAIN))
    message = str(refused.value)
    assert "ETL_DLQ_SEAL_VAULT_ADDR is plain http:// to 203.0.113.10" in message
    assert "ETL_DLQ_SEAL_VAULT_PLAINTEXT=allow" in message


@pytest.mark.parametrize("address", ACCEPTED)
def test_https_or_a_loopback_http_address_is_accepted(tmp_path: Path, address: str) -> None:
    vault = VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=address))
    etl = EtlConfig.from_env(_etl_env(tmp_path, address))
    assert vault.vault_address == address
    assert etl.dlq_seal_vault_addr == address


def test_plain_http_on_a_private_network_is_accepted_when_allowed_explicitly(tmp_path: Path) -> None:
    vault = VaultServiceConfig.from_env(
        vault_env(tmp_path, TOKENVAULT_VAULT_ADDR="http://vault:8200", TOKENVAULT_VAULT_PLAINTEXT="allow")
    )
    etl = EtlConfig.from_env(_etl_env(tmp_path, "http://vault:8200", ETL_DLQ_SEAL_VAULT_PLAINTEXT="allow"))
    assert vault.vault_address == etl.dlq_seal_vault_addr == "http://vault:8200"


def test_a_host_name_is_no_loopback_even_when_it_resolves_to_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TOKENVAULT_VAULT_ADDR is plain http:// to vault"):
        VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_VAULT_ADDR="http://vault:8200"))


@pytest.mark.parametrize(("value", "expected"), [("yes", "must be allow or unset, got 'yes'")])
def test_an_opt_in_other_than_allow_is_refused(tmp_path: Path, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"TOKENVAULT_VAULT_PLAINTEXT {expected}"):
        VaultServiceConfig.from_env(
            vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=REMOTE_PLAIN, TOKENVAULT_VAULT_PLAINTEXT=value)
        )
    with pytest.raises(ConfigError, match=f"ETL_DLQ_SEAL_VAULT_PLAINTEXT {expected}"):
        EtlConfig.from_env(_etl_env(tmp_path, REMOTE_PLAIN, ETL_DLQ_SEAL_VAULT_PLAINTEXT=value))


@pytest.mark.parametrize("address", ["vault:8200", "ftp://vault:8200", "https://", "http://[::1"])
def test_an_address_that_is_no_http_url_is_refused(tmp_path: Path, address: str) -> None:
    with pytest.raises(ConfigError, match="TOKENVAULT_VAULT_ADDR must be an https:// URL"):
        VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=address))


@pytest.mark.parametrize("setting", ["ETL_DLQ_SEAL_VAULT_ADDR", "VAULT_ADDR"])
def test_the_dead_letter_commands_refuse_plain_http_to_a_remote_openbao(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """show/resend/erase send the operator's token and get bodies in clear back over it."""
    for name in ("ETL_DLQ_SEAL_VAULT_ADDR", "VAULT_ADDR", "ETL_DLQ_SEAL_VAULT_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(setting, REMOTE_PLAIN)
    monkeypatch.setenv("VAULT_TOKEN", "operator")
    with pytest.raises(ConfigError, match=f"{setting} is plain http://.*ETL_DLQ_SEAL_VAULT_PLAINTEXT=allow"):
        dead_letters._vault_access(None)
    monkeypatch.setenv("ETL_DLQ_SEAL_VAULT_PLAINTEXT", "allow")
    assert dead_letters._vault_access(None) == (REMOTE_PLAIN, "operator")
    monkeypatch.delenv("ETL_DLQ_SEAL_VAULT_PLAINTEXT")
    monkeypatch.setenv(setting, "http://127.0.0.1:8200")
    assert dead_letters._vault_access(None) == ("http://127.0.0.1:8200", "operator")
