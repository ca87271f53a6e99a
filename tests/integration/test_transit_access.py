"""The service's Vault policy is least-privilege; the security team's can rotate."""

from __future__ import annotations

from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from vault_service.adapters.transit import TransitKeyWrapper, VaultStartupError, connect_vault


def service_client(env: dict[str, str]) -> hvac.Client:
    return connect_vault(
        env["VAULT_ADDR"],
        role_id=env["VAULT_APPROLE_ROLE_ID"],
        secret_id_file=Path(env["VAULT_APPROLE_SECRET_ID_FILE"]),
    )


def test_service_wraps_and_unwraps_data_keys(stack_env: dict[str, str]) -> None:
    wrapper = TransitKeyWrapper(service_client(stack_env), "tokenvault")
    plaintext, wrapped = wrapper.new_data_key()
    assert len(plaintext) == 32 and wrapped.startswith("vault:v")
    assert wrapper.unwrap(wrapped) == plaintext


@pytest.mark.parametrize(
    "forbidden",
    [
        lambda c: c.secrets.transit.rotate_key(name="tokenvault"),
        lambda c: c.secrets.transit.update_key_configuration(name="tokenvault", deletion_allowed=True),
        lambda c: c.secrets.transit.export_key(name="tokenvault", key_type="encryption-key"),
        lambda c: c.secrets.transit.delete_key(name="tokenvault"),
    ],
)
def test_service_cannot_rotate_configure_export_or_delete_the_kek(stack_env: dict[str, str], forbidden) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(hvac.exceptions.Forbidden):
        forbidden(service_client(stack_env))


def test_security_team_can_rotate_but_not_decrypt(stack_env: dict[str, str]) -> None:
    client = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_SECURITY_TOKEN_FILE"]).read_text())
    before = client.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"]
    client.secrets.transit.rotate_key(name="tokenvault")
    assert client.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"] == before + 1
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.decrypt_data(name="tokenvault", ciphertext="vault:v1:AAAA")


def test_unreachable_vault_gives_a_clear_startup_error() -> None:
    with pytest.raises(VaultStartupError, match="cannot reach Vault"):
        connect_vault("http://127.0.0.1:9", token="x", timeout=1)


def test_wrong_approle_secret_gives_a_clear_startup_error(stack_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "secret"
    bad.write_text("not-the-secret")
    with pytest.raises(VaultStartupError, match="refused login"):
        connect_vault(stack_env["VAULT_ADDR"], role_id=stack_env["VAULT_APPROLE_ROLE_ID"], secret_id_file=bad)
