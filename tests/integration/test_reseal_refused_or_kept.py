"""The serving role cannot destroy a value for good through vault.reseal_tokens (migration 0020).

Insider round 4, LOW-2: the serving role called vault.reseal_tokens with garbage and the row's
own key as old and new key; the value answered DATA_LOSS for ever, audited as a re-seal. Here,
on the real PostgreSQL and through the real vault, as the serving role (PG_VAULT_DSN):
- what cannot be a re-seal (same key, a key that is not the active one, a value already under
  the active key, a length the value cannot have) is refused and the value still reveals;
- what the database cannot tell from a genuine re-seal (garbage of the right length, after a
  rotation) is kept: the replaced value waits in vault.resealed_values, out of the serving
  role's reach, and the owner puts it back; a replaced wrapped key is kept the same way;
- the genuine re-encryption job still moves every value, and erasing a value leaves no kept copy.

The tests run on a database of their own: they rotate its data key.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.audit_attacks import own_database
from tokenvault_client import ItemError, Revealed, TokenType, VaultClient

__all__ = ["own_database"]  # fixture used here, defined beside the audit tests

IP = TokenType.IP
_RESEAL = "SELECT vault.reseal_tokens(ARRAY[%s], ARRAY[%s], ARRAY[%s], ARRAY[%s::bytea], 'reencrypt-job')"


def _client(env: dict[str, str], vault: RunningVault, name: str) -> VaultClient:
    return VaultClient.connect(vault.address, stack_identity(env, name))


def _reveal(env: dict[str, str], vault: RunningVault, token: str) -> str:
    """'revealed' when the token's value opens, else the item error's code."""
    with _client(env, vault, "fraud-investigator") as client:
        (outcome,) = client.detokenize([token], purpose="CASE-RESEAL-1")
    if isinstance(outcome, Revealed):
        return "revealed"
    assert isinstance(outcome, ItemError)
    return outcome.code.name


def _stored(env: dict[str, str], token: str) -> tuple[int, bytes]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT dek_id, sealed FROM vault.tokens WHERE token = %s", (token,)).fetchone()
    assert row is not None and row[1] is not None
    return row[0], bytes(row[1])


def _tokenize(env: dict[str, str], vault: RunningVault, values: list[str]) -> list[str]:
    with _client(env, vault, "etl-service") as client:
        tokens = client.tokenize([(IP, v) for v in values])
    assert all(isinstance(t, str) for t in tokens)
    return [str(t) for t in tokens]


def _as_serving_role(env: dict[str, str], work: Callable[[psycopg.Connection], object]) -> object:
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as conn:
        return work(conn)


def test_what_cannot_be_a_reseal_is_refused_and_the_value_still_reveals(own_database: dict[str, str]) -> None:
    env = own_database
    with running_vault(env) as vault:
        (token,) = _tokenize(env, vault, ["198.51.100.201"])
        dek, sealed = _stored(env, token)
        garbage = bytes(64)
        same_length = bytes(len(sealed))
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
            other = conn.execute("SELECT max(id) + 1 FROM vault.data_keys").fetchone()
        assert other is not None
        attempts = [
            ((token, dek, dek, garbage), "decrypt_only"),  # the attack: the row's own key as old and new
            ((token, dek, dek, same_length), "decrypt_only"),
            ((token, dek, other[0], same_length), "active data key"),  # not the active key
        ]
        for args, refusal in attempts:
            with pytest.raises(psycopg.errors.CheckViolation, match=refusal):
                _as_serving_role(env, lambda conn, a=args: conn.execute(_RESEAL, a))  # type: ignore[misc]
        assert _stored(env, token) == (dek, sealed)
        assert _reveal(env, vault, token) == "revealed"

        # After a rotation the old key is decrypt_only: a value of another length is still refused.
        vault.wired.rotation("admin:test").rotate_encryption_key("CHG-RESEAL-1")
        active = vault.wired.keys.refresh().active_encryption_key.key_id
        with pytest.raises(psycopg.errors.CheckViolation, match="exactly as long"):
            _as_serving_role(env, lambda conn: conn.execute(_RESEAL, (token, dek, active, garbage)))
        assert _reveal(env, vault, token) == "revealed"


def test_a_reseal_the_database_cannot_refuse_is_kept_and_undone_by_the_owner(own_database: dict[str, str]) -> None:
    env = own_database
    with running_vault(env) as vault:
        token, moved_later, erased_later = _tokenize(env, vault, ["198.51.100.202", "198.51.100.203", "198.51.100.204"])
        dek, sealed = _stored(env, token)
        rotation = vault.wired.rotation("admin:test")
        rotation.rotate_encryption_key("CHG-RESEAL-2")
        active = vault.wired.keys.refresh().active_encryption_key.key_id

        # Garbage of the right length under the active key: the database cannot tell it from a re-seal.
        forged = (token, dek, active, bytes(len(sealed)))
        changed = _as_serving_role(env, lambda c: c.execute(_RESEAL, forged).fetchone())
        assert changed == (1,)
        assert _reveal(env, vault, token) == "DATA_LOSS"  # detected at the next reveal

        # The replaced value is kept where the serving role can neither read, change nor delete it.
        for statement in (
            "SELECT sealed FROM vault.resealed_values",
            "UPDATE vault.resealed_values SET sealed = ''",
            "DELETE FROM vault.resealed_values",
            "TRUNCATE vault.resealed_values",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _as_serving_role(env, lambda conn, s=statement: conn.execute(s))  # type: ignore[misc]
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:  # the owner's recovery (migration 0020)
            conn.execute(
                "UPDATE vault.tokens t SET sealed = h.sealed, dek_id = h.dek_id FROM (SELECT DISTINCT ON (token) *"
                " FROM vault.resealed_values ORDER BY token, id DESC) h"
                " WHERE t.token = h.token AND t.sealed IS NOT NULL AND t.token = %s",
                (token,),
            )
        assert _stored(env, token) == (dek, sealed)
        assert _reveal(env, vault, token) == "revealed"

        # The genuine job still moves every value; each replaced value is kept; an erasure keeps nothing.
        assert rotation.reencrypt("CHG-RESEAL-2", batch_size=2) == 3
        assert [_reveal(env, vault, t) for t in (token, moved_later, erased_later)] == ["revealed"] * 3
        assert {_stored(env, t)[0] for t in (token, moved_later, erased_later)} == {active}
        with _client(env, vault, "privacy-officer") as officer:
            assert officer.erase([erased_later], purpose="GDPR-RESEAL-1") == [None]
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
            kept = conn.execute("SELECT token, count(*) FROM vault.resealed_values GROUP BY token").fetchall()
        assert dict(kept) == {token: 2, moved_later: 1}


def test_a_wrapped_key_the_serving_role_overwrites_is_kept(own_database: dict[str, str]) -> None:
    env = own_database
    with running_vault(env) as vault:
        _tokenize(env, vault, ["198.51.100.205"])
        dek = vault.wired.keys.refresh().active_encryption_key.key_id
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
            row = conn.execute("SELECT wrapped_key FROM vault.data_keys WHERE id = %s", (dek,)).fetchone()
        assert row is not None
        with pytest.raises(psycopg.errors.CheckViolation, match="newer KEK version"):  # migration 0024
            _as_serving_role(
                env,
                lambda c: c.execute("UPDATE vault.data_keys SET wrapped_key = 'vault:v1:AAAA' WHERE id = %s", (dek,)),
            )
        _as_serving_role(  # one it still may: as if under a newer KEK version
            env, lambda c: c.execute("UPDATE vault.data_keys SET wrapped_key = 'vault:v999:AAAA' WHERE id = %s", (dek,))
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as_serving_role(env, lambda c: c.execute("DELETE FROM vault.replaced_wrapped_keys"))
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
            kept = conn.execute("SELECT wrapped_key FROM vault.replaced_wrapped_keys WHERE key_id = %s", (dek,))
            assert kept.fetchall() == [(row[0],)]
