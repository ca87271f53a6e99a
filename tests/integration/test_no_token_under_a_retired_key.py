"""No row goes into vault.tokens under a retired data key; one planted before that stops no reencrypt (review 29, F2).

The serving role may INSERT into vault.tokens. A row whose dek_id named a RETIRED key stopped every
`reencrypt` with KeysUnavailable (the key is not loaded), before it moved anything, and the old key
stayed decrypt_only for ever. Against the real stack: migration 0036 refuses such an insert, from the
serving role and the owner alike, with no token in its message; a vault whose key ring still names the
retired key (a stale replica) reloads its keys and issues the token under the live one; and a row
planted before 0036 (the trigger disabled, as the owner) is set aside by `reencrypt`, which moves every
other value and retires the key they leave.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import errors

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, own_database
from tests.integration.test_reseal_refused_or_kept import _stored, _tokenize
from vault_service.domain.errors import NextFingerprintsAltered, StoredValueAltered

__all__ = ["own_database"]

PLANTED = "ip_r29retired0000000000"
_PLANT = (
    "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
    " VALUES (%s, 'ip', %s, %s, %s, %s)"
)


def _state(env: dict[str, str], key_id: int) -> str:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
        row = owner.execute("SELECT state FROM vault.data_keys WHERE id = %s", (key_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_no_row_under_a_retired_key_and_one_planted_before_is_set_aside(own_database: dict[str, str]) -> None:
    env = own_database
    with running_vault(env) as vault:
        tokens = _tokenize(env, vault, [f"198.51.100.{n}" for n in range(240, 243)])
        rotation = vault.wired.rotation("admin:test")
        old_dek, sealed = _stored(env, tokens[0])
        with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
            row = owner.execute("SELECT fingerprint_key_id FROM vault.tokens WHERE token = %s", (tokens[0],)).fetchone()
        assert row is not None
        fk = row[0]
        stale_ring = vault.wired.keys.ring  # a replica that has not seen the rotation below
        new_dek = rotation.rotate_encryption_key("CHG-R29-1")
        assert rotation.reencrypt("CHG-R29-1", batch_size=100) == 3
        assert _state(env, old_dek) == "retired"

        planted = (PLANTED, os.urandom(32), fk, old_dek, os.urandom(len(sealed)))
        for dsn in ("PG_VAULT_DSN", "PG_ADMIN_DSN"):  # the serving role, and the owner too
            with psycopg.connect(env[dsn], autocommit=True) as conn, pytest.raises(errors.CheckViolation) as refused:
                conn.execute(_PLANT, planted)
            assert refused.value.diag.constraint_name == "tokens_under_live_keys"
            assert f"no row goes in under a retired data key (encryption key {old_dek})" in str(refused.value)
            assert PLANTED not in str(refused.value) and "r29" not in str(refused.value)

        vault.wired.keys._ring = stale_ring  # its next insert names the retired key: refused, keys reloaded
        (fresh,) = _tokenize(env, vault, ["198.51.100.250"])
        assert _stored(env, fresh)[0] == new_dek

        with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:  # a row planted before migration 0036
            owner.execute("ALTER TABLE vault.tokens DISABLE TRIGGER tokens_are_under_live_keys")
            owner.execute(_PLANT, planted)
            owner.execute("ALTER TABLE vault.tokens ENABLE TRIGGER tokens_are_under_live_keys")
        newest = rotation.rotate_encryption_key("CHG-R29-2")
        with pytest.raises(StoredValueAltered) as set_aside:  # before: KeysUnavailable, nothing moved, every run
            rotation.reencrypt("CHG-R29-2", batch_size=100)
        message = str(set_aside.value)
        assert f"1 stored value(s) do not open under their data key (1 under data key {old_dek})" in message
        assert f"data keys retired: [{new_dek}]" in message and PLANTED not in message
        assert all(_stored(env, token)[0] == newest for token in [*tokens, fresh])  # every other value moved
        assert _state(env, new_dek) == "retired"

        with as_owner(env) as owner:  # a row under no data key at all (no foreign key; attack 27, F6)
            owner.execute(_PLANT, (PLANTED.replace("retired", "nokey00"), os.urandom(32), fk, 9999, sealed))
        pending = rotation.rotate_fingerprint_key("CHG-R29-3")
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as serving:  # and a next fingerprint for it
            serving.execute(
                "SELECT vault.set_next_fingerprints(%s::text[], %s::bytea[], 'x')",
                ([PLANTED.replace("retired", "nokey00")], [os.urandom(32)]),
            )
        with pytest.raises(NextFingerprintsAltered):  # not one the re-index wrote: cleared (before: KeysUnavailable)
            rotation.reindex("CHG-R29-3", batch_size=2)
        with pytest.raises(StoredValueAltered) as reindex_set_aside:  # before: KeysUnavailable at once, every run
            rotation.reindex("CHG-R29-3", batch_size=2)
        message = str(reindex_set_aside.value)
        assert f"2 stored value(s) do not open under their data key (1 under data key {old_dek}, 1 under data key" in (
            message
        )
        assert "1 under data key 9999;" in message and f"key {pending} was not promoted" in message
        assert PLANTED not in message and "r29" not in message
        with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:  # every other value fingerprinted under the pending key
            left = owner.execute(
                "SELECT count(*) FILTER (WHERE next_fingerprint_key_id = %s), count(*) FROM vault.tokens"
                " WHERE fingerprint IS NOT NULL",
                (pending,),
            ).fetchone()
        assert left == (len(tokens) + 1, len(tokens) + 3)
        assert vault.wired.keys.refresh().generation.pending_fingerprint_id == pending
