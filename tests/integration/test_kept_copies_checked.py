"""A value re-sealed with garbage keeps its good copy until the owner puts it back (review 25, R25-1).

During a routine data-key rotation the serving role (SQL only, no Vault access) re-seals values
with garbage of the right length; migration 0020 keeps their good values in
vault.resealed_values under the old key. The routine cycle used to destroy those copies: the
re-encryption job retired the old key and `retire-kek-versions` accepted to retire the KEK
version wrapping it. Here, on the real PostgreSQL and OpenBao: `reencrypt` retires no key whose
kept copies differ from the values now stored, `retire-kek-versions` refuses while a retired key
(the serving role may retire one itself) holds such copies, and after the owner's restore
(docs/key-rotation.md) everything goes through. Each test runs on a database of its own, the
KEK test on a KEK of its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import psycopg
import pytest

from tests.conftest import RunningVault, running_vault
from tests.integration.audit_attacks import own_database
from tests.integration.test_erasure_crypto_shredding import _security_team
from tests.integration.test_reseal_refused_or_kept import _reveal, _stored, _tokenize
from vault_service.adapters.transit_kek_config import TransitKekConfig
from vault_service.domain.errors import KekVersionsInUse, KeptCopiesDiffer, StorageError

__all__ = ["own_database"]  # fixture used here, defined beside the audit tests

_RESEAL = "SELECT vault.reseal_tokens(%s, %s, %s, %s, 'vault-service')"
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "key-rotation.md"


def _owners_restore() -> str:
    """The owner's restore SQL as docs/key-rotation.md gives it, for data key `K`."""
    section = RUNBOOK.read_text().split("## A re-sealed value differs from its kept copy", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def _garbage_reseal(env: dict[str, str], tokens: list[str], new_dek: int) -> None:
    """What the serving role can do once a data key is decrypt_only: garbage of the right length."""
    stored = [_stored(env, t) for t in tokens]
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as serving:
        row = serving.execute(
            _RESEAL, (tokens, [s[0] for s in stored], [new_dek] * len(tokens), [os.urandom(len(s[1])) for s in stored])
        ).fetchone()
    assert row == (len(tokens),)


def _key_state(env: dict[str, str], key_id: int) -> str:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT state FROM vault.data_keys WHERE id = %s", (key_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _outcomes(env: dict[str, str], action: str) -> list[str]:
    """`action`'s rows, each outcome less the intent row it names at its end (review 33, R33-5)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT outcome FROM vault.audit_log WHERE action = %s ORDER BY id", (action,))
        return [re.sub(r" \(intent row [0-9]+\)$", "", r[0]) for r in rows.fetchall()]


def _restore(env: dict[str, str], key_id: int) -> None:
    """The runbook's restore, run as the owner."""
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(re.sub(r"\bK\b", str(key_id), _owners_restore()).encode())


def _rewrap_every_live_key(vault: RunningVault) -> None:
    """The rewrap; the running service's own key check may rewrap a key first (refused the same version twice)."""
    latest = vault.wired.wrapper.latest_version()
    deadline = time.monotonic() + 15
    while any(k.kek_version < latest for k in vault.wired.key_store.load_keys() if k.state != "retired"):
        assert time.monotonic() < deadline, "the data keys were not rewrapped"
        with contextlib.suppress(StorageError):
            vault.wired.keys.rewrap_outdated()


def test_reencrypt_retires_no_key_whose_kept_copies_differ_until_the_owner_restores_them(
    own_database: dict[str, str],
) -> None:
    env = own_database
    with running_vault(env) as vault:
        tokens = _tokenize(env, vault, [f"198.51.100.{n}" for n in range(210, 215)])
        rotation = vault.wired.rotation("admin:test")
        old_dek = _stored(env, tokens[0])[0]
        new_dek = rotation.rotate_encryption_key("CHG-KEPT-1")
        _garbage_reseal(env, tokens[:2], new_dek)

        with pytest.raises(KeptCopiesDiffer) as refused:
            rotation.reencrypt("CHG-KEPT-1", batch_size=2)
        message = str(refused.value)
        assert "2 re-sealed value(s)" in message and f"2 under data key {old_dek}" in message
        assert "tampering suspected" in message and "docs/key-rotation.md" in message
        assert not any(t in message for t in tokens)  # a count, never a token or value
        assert _key_state(env, old_dek) == "decrypt_only"  # its kept copies still open
        assert _outcomes(env, "reencrypt")[-1] == f"refused: {message}"
        assert [_reveal(env, vault, t) for t in tokens] == ["DATA_LOSS"] * 2 + ["revealed"] * 3

        _restore(env, old_dek)
        assert rotation.reencrypt("CHG-KEPT-1", batch_size=2) == 5  # every kept copy under it went back
        assert _key_state(env, old_dek) == "retired"
        assert [_reveal(env, vault, t) for t in tokens] == ["revealed"] * 5
        assert _outcomes(env, "reencrypt")[-1] == f"ok: 5 values moved, data keys retired: [{old_dek}]"


@contextlib.contextmanager
def _vault_on_a_kek_of_its_own(env: dict[str, str]) -> Iterator[tuple[RunningVault, hvac.Client, TransitKekConfig]]:
    """A running vault on a KEK of its own (the session's stays as it is), the security team, the KEK's config."""
    root = Path(env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()
    name = f"tokenvault-kept-{uuid.uuid4().hex[:8]}"
    hvac.Client(url=env["VAULT_ADDR"], token=root).secrets.transit.create_key(name=name)
    security = _security_team(hvac.Client(url=env["VAULT_ADDR"], token=root), name)
    own = {"TOKENVAULT_KEK_NAME": name, "TOKENVAULT_VAULT_ROLE_ID": "", "TOKENVAULT_VAULT_TOKEN": root}
    with running_vault(env, **own) as vault:
        yield vault, security, TransitKekConfig(env["VAULT_ADDR"], security.token, name)


def test_retire_kek_versions_refuses_while_a_retired_key_holds_the_only_good_copies(
    own_database: dict[str, str],
) -> None:
    env = own_database
    with _vault_on_a_kek_of_its_own(env) as (vault, security, kek):
        tokens = _tokenize(env, vault, ["198.51.100.220", "198.51.100.221"])
        rotation = vault.wired.rotation("admin:test")
        old_dek = _stored(env, tokens[0])[0]
        new_dek = rotation.rotate_encryption_key("CHG-KEPT-2")
        _garbage_reseal(env, tokens, new_dek)
        with psycopg.connect(env["PG_VAULT_DSN"]) as serving:  # no live row under it: the serving role may
            serving.execute(
                "UPDATE vault.data_keys SET state = 'retired', retired_at = now() WHERE id = %s", (old_dek,)
            )

        security.secrets.transit.rotate_key(name=kek.name)
        _rewrap_every_live_key(vault)  # the retired key is not rewrapped: the retirement would make it unreadable
        before = kek.versions()
        with pytest.raises(KekVersionsInUse) as refused:
            rotation.retire_kek_versions(before.latest, "CHG-KEPT-2", kek)
        message = str(refused.value)
        assert f"2 re-sealed value(s) no longer hold the value kept under retired data key {old_dek}" in message
        assert "tampering suspected" in message and "nothing was changed in Transit" in message
        assert not any(t in message for t in tokens)
        assert kek.versions() == before
        assert _outcomes(env, "retire-kek-versions")[-1].startswith("refused: 2 re-sealed value(s)")

        _restore(env, old_dek)
        assert rotation.reencrypt("CHG-KEPT-2") == 2
        assert _key_state(env, old_dek) == "retired"
        assert [_reveal(env, vault, t) for t in tokens] == ["revealed"] * 2
        assert rotation.retire_kek_versions(before.latest, "CHG-KEPT-2", kek) == before.latest


def test_retire_kek_versions_refuses_when_a_retired_key_with_kept_copies_cannot_be_checked(
    own_database: dict[str, str],
) -> None:
    # The retired key's wrapped key is swapped for another key's (the owner can; the check value
    # then says it is not the key made under that id): its kept copies cannot be opened, so the
    # KEK version wrapping it must not go - it may wrap the only good copies (R26-4, R27-4).
    env = own_database
    with _vault_on_a_kek_of_its_own(env) as (vault, security, kek):
        tokens = _tokenize(env, vault, ["198.51.100.222"])
        rotation = vault.wired.rotation("admin:test")
        old_dek = _stored(env, tokens[0])[0]
        new_dek = rotation.rotate_encryption_key("CHG-KEPT-3")
        _garbage_reseal(env, tokens, new_dek)
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:
            owner.execute(
                "UPDATE vault.data_keys SET wrapped_key = (SELECT wrapped_key FROM vault.data_keys WHERE id = %s),"
                " state = 'retired', retired_at = now() WHERE id = %s",
                (new_dek, old_dek),
            )

        security.secrets.transit.rotate_key(name=kek.name)
        _rewrap_every_live_key(vault)
        before = kek.versions()
        with pytest.raises(KekVersionsInUse) as refused:
            rotation.retire_kek_versions(before.latest, "CHG-KEPT-3", kek)
        message = str(refused.value)
        assert f"the kept copies under retired data key {old_dek}" in message and "could not be checked" in message
        assert "is not the key made under that id" in message
        assert not any(t in message for t in tokens)
        assert kek.versions() == before
        assert _outcomes(env, "retire-kek-versions")[-1].startswith(
            f"refused: the kept copies under retired data key {old_dek}"
        )
