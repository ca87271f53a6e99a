"""An erased value's residue on disk becomes unreadable once its keys are retired (attack 19, finding 4).

The erasing UPDATE leaves the row's old version - ciphertext and fingerprint - in vault.tokens'
data file (until vacuumed, and its bytes in free space until overwritten), in the WAL and in
backups. Whoever holds such a copy and the vault's Vault identity opened the erased value. The
threat model's answer is crypto-shredding with the key-rotation commands, in this order: retire
the data key (`reencrypt`) and the fingerprint key (`reindex`), then rotate the KEK (`rewrap`
rewraps live keys only) and raise `min_decryption_version`, which Vault's operators then make
final with `trim` (until then the security team may lower it again). This test keeps the residue as a
file-level copy would hold it, shows it opens after the erasure, runs the sequence, and shows
that neither its ciphertext nor its fingerprint can be used any more, by anyone with the
vault's identity, while every live value still reveals.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import hvac
import psycopg
import pytest

from tests.conftest import running_vault, stack_identity, vault_config
from tests.integration.own_database import database_of_its_own
from tokenvault_client import Revealed, TokenType, VaultClient
from vault_service.bootstrap import bootstrap
from vault_service.domain import crypto
from vault_service.domain.errors import KeysUnavailable
from vault_service.domain.token_types import TokenType as StoredType

ERASED, KEPT = "203.0.113.77", "198.51.100.78"


def _security_team(root: hvac.Client, kek: str) -> hvac.Client:
    """A token with the shipped security team's policy, pointed at `kek` instead of the session's KEK."""
    shipped = (Path(__file__).resolve().parents[2] / "config" / "vault" / "tokenvault-security.hcl").read_text()
    policy = shipped.replace("transit/keys/tokenvault/", f"transit/keys/{kek}/").replace(
        'transit/keys/tokenvault"', f'transit/keys/{kek}"'
    )
    assert policy.count(kek) == 3, "the shipped policy's KEK paths moved: update this test"
    root.sys.create_or_update_policy(name=f"security-{kek}", policy=policy)
    token = root.auth.token.create(policies=[f"security-{kek}"], ttl="10m")["auth"]["client_token"]
    return hvac.Client(url=root.url, token=token)


def test_retiring_the_keys_leaves_an_erased_values_residue_unreadable(stack_env: dict[str, str]) -> None:
    root = Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()
    bao = hvac.Client(url=stack_env["VAULT_ADDR"], token=root)
    kek = f"tokenvault-shred-{uuid.uuid4().hex[:8]}"  # a KEK of its own: the session's stays as it is
    bao.secrets.transit.create_key(name=kek)
    with database_of_its_own(stack_env, "shred", migrated=True) as env:
        own = {
            "TOKENVAULT_DATABASE_DSN": env["PG_VAULT_DSN"],
            "TOKENVAULT_KEK_NAME": kek,
            "TOKENVAULT_VAULT_ROLE_ID": "",  # the root token: the service's policy names the session's KEK only
            "TOKENVAULT_VAULT_TOKEN": root,
        }
        with running_vault(env, **own) as vault:
            with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
                erased, kept = (str(o) for o in etl.tokenize([(TokenType.IP, ERASED), (TokenType.IP, KEPT)]))
            with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:  # what a base backup taken now holds of the row
                residue = conn.execute(
                    "SELECT dek_id, sealed, fingerprint, fingerprint_key_id FROM vault.tokens WHERE token = %s",
                    (erased,),
                ).fetchone()
            assert residue is not None
            dek_id, sealed, fingerprint, fingerprint_key_id = residue
            with VaultClient.connect(vault.address, stack_identity(env, "privacy-officer")) as officer:
                assert officer.erase([erased], "GDPR-SHRED-1") == [None]

            admin = bootstrap(vault_config(env, **own))
            try:
                wrapped = {k.key_id: k.wrapped_key for k in admin.key_store.load_keys()}
                ip = StoredType.IP

                def opened() -> tuple[str, bool]:
                    """The residue opened with the keys as stored: its value, and whether its fingerprint matches."""
                    data_key = crypto.DataKey(dek_id, admin.wrapper.unwrap(wrapped[dek_id]))
                    fp_key = crypto.DataKey(fingerprint_key_id, admin.wrapper.unwrap(wrapped[fingerprint_key_id]))
                    value = crypto.open_sealed(data_key, ip, erased, bytes(sealed))
                    return value, crypto.fingerprint(fp_key, ip, ERASED) == bytes(fingerprint)

                assert opened() == (ERASED, True)  # the erasure alone: the residue opens (attack 19)

                rotation = admin.rotation("admin:shred")
                rotation.rotate_encryption_key("CHG-SHRED")
                rotation.reencrypt("CHG-SHRED")
                rotation.rotate_fingerprint_key("CHG-SHRED")
                rotation.reindex("CHG-SHRED")
                bao.secrets.transit.rotate_key(name=kek)
                rotation.rewrap("CHG-SHRED")
                status = rotation.status()
                assert status.safe_min_decryption_version == status.kek_latest_version
                bao.secrets.transit.update_key_configuration(name=kek, min_decryption_version=status.kek_latest_version)

                wrapped = {k.key_id: k.wrapped_key for k in admin.key_store.load_keys()}  # as stored now
                states = {k.key_id: k.state for k in admin.key_store.load_keys()}
                assert states[dek_id] == states[fingerprint_key_id] == "retired"
                with pytest.raises(KeysUnavailable, match="Vault refused to unwrap"):
                    opened()
                with pytest.raises(KeysUnavailable, match="Vault refused to unwrap"):
                    admin.wrapper.unwrap(wrapped[fingerprint_key_id])

                # Raised is not destroyed: the security team may lower it again, and the residue opens
                # (review 20, R20-2). Only Vault's operators' trim removes the old versions for good.
                security = _security_team(bao, kek)
                security.secrets.transit.update_key_configuration(name=kek, min_decryption_version=1)
                assert opened() == (ERASED, True)
                latest = status.kek_latest_version
                security.secrets.transit.update_key_configuration(name=kek, min_decryption_version=latest)
                security.secrets.transit.update_key_configuration(name=kek, min_encryption_version=latest)
                bao.secrets.transit.trim_key(name=kek, min_version=latest)  # root: the operators' step
                with pytest.raises(hvac.exceptions.InvalidRequest):
                    security.secrets.transit.update_key_configuration(name=kek, min_decryption_version=1)
                with pytest.raises(KeysUnavailable, match="Vault refused to unwrap"):
                    opened()
            finally:
                admin.close()
        with (
            running_vault(env, **own) as restarted,  # a fresh start: live values open with the new keys only
            VaultClient.connect(restarted.address, stack_identity(env, "analyst")) as analyst,
        ):
            (revealed,) = analyst.detokenize([kept], "CASE-SHRED")
            assert isinstance(revealed, Revealed) and revealed.value == KEPT
    bao.secrets.transit.update_key_configuration(name=kek, deletion_allowed=True)
    bao.secrets.transit.delete_key(name=kek)
