"""Least privilege in Vault, against real OpenBao: the service may only use the KEK and sign
with the audit key; the security team may only rotate and raise the minimum versions."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from devstack.openbao import OpenBao, TransitSetup, configure_transit, start_openbao
from vault_service.adapters.transit import (
    TransitKeyWrapper,
    TransitSigner,
    VaultStartupError,
    connect_vault,
    verify_signature,
)

KEY_FIELDS = ("exportable", "allow_plaintext_backup", "deletion_allowed", "min_decryption_version", "latest_version")
Forbidden = Callable[[hvac.Client], Any]


def service_client(env: dict[str, str]) -> hvac.Client:
    return connect_vault(
        env["VAULT_ADDR"],
        role_id=env["VAULT_APPROLE_ROLE_ID"],
        secret_id_file=Path(env["VAULT_APPROLE_SECRET_ID_FILE"]),
    )


def security_client(address: str, token_file: Path) -> hvac.Client:
    return hvac.Client(url=address, token=token_file.read_text())


@pytest.fixture(scope="module")
def own_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenBao, TransitSetup]]:
    """An OpenBao of this module's own, configured as the stack's, for tests that change the KEK."""
    directory = tmp_path_factory.mktemp("bao")
    bao = start_openbao(directory / "openbao.log")
    try:
        yield bao, configure_transit(bao, directory / "secrets")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bao.pid, signal.SIGKILL)


def kek_config(bao: OpenBao, name: str = "tokenvault") -> dict[str, Any]:
    data = hvac.Client(url=bao.address, token=bao.root_token).secrets.transit.read_key(name=name)["data"]
    return {field: data[field] for field in KEY_FIELDS}


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
        lambda c: c.secrets.transit.backup_key(name="tokenvault"),
        lambda c: c.secrets.transit.trim_key(name="tokenvault", min_version=1),
    ],
    ids=["rotate", "config", "export", "delete", "backup", "trim"],
)
def test_service_cannot_rotate_configure_export_or_delete_the_kek(
    stack_env: dict[str, str], forbidden: Forbidden
) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        forbidden(service_client(stack_env))


def test_service_signs_and_anyone_verifies_offline(stack_env: dict[str, str]) -> None:
    signer = TransitSigner(service_client(stack_env))
    checkpoint = b'{"head":"ab12","row":42,"count":42}'
    signature = signer.sign(checkpoint)
    keys = signer.public_keys()
    assert signature.startswith("vault:v") and keys
    assert verify_signature(keys, checkpoint, signature)
    assert not verify_signature(keys, checkpoint.replace(b"42", b"41"), signature)
    assert not verify_signature(keys, checkpoint, signature.replace("vault:v1:", "vault:v9:"))
    assert not verify_signature(keys, checkpoint, "vault:v1:not-base64!")
    assert not verify_signature(keys, checkpoint, "garbage")


@pytest.mark.parametrize(
    "forbidden",
    [
        lambda c: c.secrets.transit.create_key(name="tokenvault-audit", key_type="ed25519", exportable=True),
        lambda c: c.secrets.transit.create_key(name="tokenvault-audit-2", key_type="ed25519"),
        lambda c: c.secrets.transit.rotate_key(name="tokenvault-audit"),
        lambda c: c.secrets.transit.update_key_configuration(name="tokenvault-audit", exportable=True),
        lambda c: c.secrets.transit.update_key_configuration(name="tokenvault-audit", deletion_allowed=True),
        lambda c: c.secrets.transit.export_key(name="tokenvault-audit", key_type="signing-key"),
        lambda c: c.secrets.transit.delete_key(name="tokenvault-audit"),
        lambda c: c.secrets.transit.sign_data(name="tokenvault", hash_input="YQ=="),
    ],
    ids=["recreate", "create-other", "rotate", "exportable", "deletable", "export", "delete", "sign-with-kek"],
)
def test_service_can_only_sign_with_the_audit_key(stack_env: dict[str, str], forbidden: Forbidden) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        forbidden(service_client(stack_env))


def test_the_audit_key_is_ed25519_and_not_exportable(stack_env: dict[str, str]) -> None:
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text())
    data = root.secrets.transit.read_key(name="tokenvault-audit")["data"]
    assert (data["type"], data["exportable"], data["deletion_allowed"]) == ("ed25519", False, False)


def test_security_team_can_rotate_but_not_decrypt(stack_env: dict[str, str]) -> None:
    client = security_client(stack_env["VAULT_ADDR"], Path(stack_env["VAULT_SECURITY_TOKEN_FILE"]))
    before = client.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"]
    client.secrets.transit.rotate_key(name="tokenvault")
    assert client.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"] == before + 1
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.decrypt_data(name="tokenvault", ciphertext="vault:v1:AAAA")


@pytest.mark.parametrize(
    "change",
    [
        {"exportable": True, "allow_plaintext_backup": True, "deletion_allowed": True},  # finding 1, as reported
        {"exportable": True},
        {"allow_plaintext_backup": True},
        {"deletion_allowed": True},
        {"min_decryption_version": 1, "exportable": True},  # smuggled beside an allowed parameter
        {"auto_rotate_period": "1h"},
    ],
    ids=["all-three", "exportable", "plaintext-backup", "deletable", "smuggled", "other"],
)
def test_security_team_cannot_make_the_kek_exportable_backed_up_or_deletable(
    own_bao: tuple[OpenBao, TransitSetup], change: dict[str, Any]
) -> None:
    bao, transit = own_bao
    client = security_client(bao.address, transit.security_token_file)
    before = kek_config(bao)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.write_data("transit/keys/tokenvault/config", data=change)
    assert kek_config(bao) == before
    assert before["exportable"] is False and before["deletion_allowed"] is False


@pytest.mark.parametrize(
    "forbidden",
    [
        lambda c: c.secrets.transit.decrypt_data(name="tokenvault", ciphertext="vault:v1:AAAA"),
        lambda c: c.secrets.transit.generate_data_key(name="tokenvault", key_type="plaintext"),
        lambda c: c.secrets.transit.export_key(name="tokenvault", key_type="encryption-key"),
        lambda c: c.secrets.transit.backup_key(name="tokenvault"),
        lambda c: c.secrets.transit.delete_key(name="tokenvault"),
        lambda c: c.secrets.transit.trim_key(name="tokenvault", min_version=1),
        lambda c: c.secrets.transit.sign_data(name="tokenvault-audit", hash_input="YQ=="),
        lambda c: c.secrets.transit.update_key_configuration(name="tokenvault-audit", exportable=True),
        lambda c: c.secrets.transit.create_key(name="tokenvault-2"),
    ],
    ids=["decrypt", "datakey", "export", "backup", "delete", "trim", "sign", "audit-key-config", "create"],
)
def test_security_team_cannot_decrypt_export_backup_or_delete(
    own_bao: tuple[OpenBao, TransitSetup], forbidden: Forbidden
) -> None:
    bao, transit = own_bao
    with pytest.raises(hvac.exceptions.Forbidden):
        forbidden(security_client(bao.address, transit.security_token_file))


def test_security_team_rotates_and_raises_the_minimum_versions(own_bao: tuple[OpenBao, TransitSetup]) -> None:
    bao, transit = own_bao
    client = security_client(bao.address, transit.security_token_file)
    client.secrets.transit.rotate_key(name="tokenvault")
    client.secrets.transit.rotate_key(name="tokenvault-audit")
    latest = client.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"]
    client.write_data(  # hvac's own check wrongly demands min_encryption > min_decryption
        "transit/keys/tokenvault/config", data={"min_decryption_version": latest, "min_encryption_version": latest}
    )
    after = hvac.Client(url=bao.address, token=bao.root_token).secrets.transit.read_key(name="tokenvault")["data"]
    assert (after["min_decryption_version"], after["min_encryption_version"]) == (latest, latest) and latest >= 2
    assert (after["exportable"], after["allow_plaintext_backup"], after["deletion_allowed"]) == (False, False, False)
    signer = TransitSigner(service_client_for(bao, transit))
    assert set(signer.public_keys()) == {1, 2}  # old checkpoints stay verifiable after a rotation
    signature = signer.sign(b"after rotation")
    assert signature.startswith("vault:v2:") and verify_signature(signer.public_keys(), b"after rotation", signature)


def service_client_for(bao: OpenBao, transit: TransitSetup) -> hvac.Client:
    return connect_vault(bao.address, role_id=transit.role_id, secret_id_file=transit.secret_id_file)


def test_unreachable_vault_gives_a_clear_startup_error() -> None:
    with pytest.raises(VaultStartupError, match="cannot reach Vault"):
        connect_vault("http://127.0.0.1:9", token="x", timeout=1)


def test_wrong_approle_secret_gives_a_clear_startup_error(stack_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "secret"
    bad.write_text("not-the-secret")
    with pytest.raises(VaultStartupError, match="refused login"):
        connect_vault(stack_env["VAULT_ADDR"], role_id=stack_env["VAULT_APPROLE_ROLE_ID"], secret_id_file=bad)


def test_openbao_audit_device_records_transit_use_and_key_changes_hashed(
    own_bao: tuple[OpenBao, TransitSetup],
) -> None:
    bao, transit = own_bao
    wrapper = TransitKeyWrapper(service_client_for(bao, transit), "tokenvault")
    plaintext, wrapped = wrapper.new_data_key()
    wrapper.unwrap(wrapped)
    security = security_client(bao.address, transit.security_token_file)
    current = kek_config(bao)["min_decryption_version"]
    security.write_data("transit/keys/tokenvault/config", data={"min_decryption_version": current})
    entries = [json.loads(line) for line in bao.audit_log.read_text().splitlines()]
    responses = {e["request"]["path"]: e for e in entries if e["type"] == "response"}
    assert {"transit/datakey/plaintext/tokenvault", "transit/decrypt/tokenvault"} <= responses.keys()
    config_change = responses["transit/keys/tokenvault/config"]
    assert config_change["auth"]["policies"] == ["default", "tokenvault-security"]
    assert config_change["request"]["data"] == {"min_decryption_version": current}  # numbers are not secrets
    decrypt = responses["transit/decrypt/tokenvault"]
    assert decrypt["response"]["data"]["plaintext"].startswith("hmac-sha256:")
    text = bao.audit_log.read_text()
    assert base64.b64encode(plaintext).decode() not in text and wrapped not in text
    assert bao.audit_log.stat().st_mode & 0o077 == 0
