"""A planted row of a known type whose value does not open stops no key job for good (review 28, F2).

The serving role may INSERT into vault.tokens but holds no data key, so a row it plants carries a
sealed value that opens under no key. 0033's CHECK refuses an unknown type, not such a row of type
`ip`; it stopped `reencrypt` every run with SealBroken, which left the intent row without an outcome.
Against the real stack: `reencrypt` sets the row aside, moves every other value, keeps the row's key
`decrypt_only` and records `refused:` (count, key, remedy; no token), run by the vault's KeyJobs for
the security team's certificate or as the admin command; `reindex` sets it aside the same way (attack 27,
F6: it stopped on it with a `failed:` outcome, every run): every other value is fingerprinted under the
pending key, which is not promoted, and the outcome row says `refused:`; once the owner deletes the row as
the runbook says, both finish.
"""

from __future__ import annotations

import os
import re

import grpc
import psycopg
import pytest

from tests.conftest import running_vault, stack_identity
from tests.integration.audit_attacks import own_database
from tests.integration.test_reseal_refused_or_kept import _stored, _tokenize
from tokenvault_client import VaultClient, VaultClientError
from vault_service.domain.errors import StoredValueAltered

__all__ = ["own_database"]

PLANTED = "ip_r28planted00000000000"


def _last_outcome(env: dict[str, str], action: str) -> str:
    """The newest outcome row of `action`, less the intent row it names at its end (review 33, R33-5)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
        row = owner.execute(
            "SELECT outcome, (SELECT max(id) FROM vault.audit_log WHERE action = %s AND outcome LIKE 'started%%')"
            " FROM vault.audit_log WHERE action = %s ORDER BY id DESC LIMIT 1",
            (action, action),
        ).fetchone()
    assert row is not None
    named = f" (intent row {row[1]})"
    assert str(row[0]).endswith(named), row
    return str(row[0]).removesuffix(named)


def _one(conn: psycopg.Connection, query: str, argument: object) -> tuple[object, ...]:
    row = conn.execute(query, (argument,)).fetchone()
    assert row is not None
    return tuple(row)


def test_a_row_that_does_not_open_is_set_aside_and_every_other_value_moves(own_database: dict[str, str]) -> None:
    env = own_database
    with running_vault(env) as vault:
        tokens = _tokenize(env, vault, [f"198.51.100.{n}" for n in range(230, 233)])
        rotation = vault.wired.rotation("admin:test")
        old_dek, sealed = _stored(env, tokens[0])
        with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
            (fk,) = _one(owner, "SELECT fingerprint_key_id FROM vault.tokens WHERE token = %s", tokens[0])
        new_dek = rotation.rotate_encryption_key("CHG-R28-1")
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as serving:  # what the CHECKs let in
            serving.execute(
                "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
                " VALUES (%s, 'ip', %s, %s, %s, %s)",
                (PLANTED, os.urandom(32), fk, old_dek, os.urandom(len(sealed))),
            )
        with VaultClient.connect(vault.address, stack_identity(env, "security-team")) as team:
            with pytest.raises(VaultClientError) as through_key_jobs:  # the vault's KeyJobs service
                list(team.key_job("reencrypt", "CHG-R28-1", batch_size=100))
            assert through_key_jobs.value.code == grpc.StatusCode.DATA_LOSS
            message = through_key_jobs.value.details
            assert f"1 stored value(s) do not open under their data key (1 under data key {old_dek})" in message
            assert "docs/key-rotation.md" in message and PLANTED not in message and "r28" not in message
            assert _last_outcome(env, "reencrypt") == f"refused: {message}"
            assert all(_stored(env, token)[0] == new_dek for token in tokens)  # the good values moved
            with pytest.raises(StoredValueAltered) as again:  # every run says so (here the admin command)
                rotation.reencrypt("CHG-R28-1", batch_size=2)
            assert f"1 stored value(s) do not open under their data key (1 under data key {old_dek})" in str(
                again.value
            )
            assert _last_outcome(env, "reencrypt") == f"refused: {again.value}"
            with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
                state = _one(owner, "SELECT state FROM vault.data_keys WHERE id = %s", old_dek)
                assert state == ("decrypt_only",)  # the planted row's key: nothing that opens is lost
                listed = re.search(
                    r"SELECT id, token_type FROM vault.tokens WHERE [^)]*\) AND sealed IS NOT NULL", message
                )
                assert listed is not None  # the message's query lists exactly the planted row
                (only,) = owner.execute(listed.group(0)).fetchall()
                (planted_id,) = _one(owner, "SELECT id FROM vault.tokens WHERE token = %s", PLANTED)
                assert tuple(only) == (planted_id, "ip")

            pending = rotation.rotate_fingerprint_key("CHG-R28-2")
            with pytest.raises(VaultClientError) as stopped:  # before: `failed:`, nothing fingerprinted, every run
                list(team.key_job("reindex", "CHG-R28-2", batch_size=100))
            assert stopped.value.code == grpc.StatusCode.DATA_LOSS
            message = stopped.value.details
            assert f"1 stored value(s) do not open under their data key (1 under data key {old_dek};" in message
            assert f"key {pending} was not promoted" in message and "docs/key-rotation.md" in message
            assert PLANTED not in message and "r28" not in message
            assert _last_outcome(env, "reindex") == f"refused: {message}"
            assert vault.wired.keys.refresh().generation.pending_fingerprint_id == pending  # nothing lost
            with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
                listed = re.search(r"SELECT id, token_type, dek_id FROM vault.tokens WHERE .*?\);", message)
                assert listed is not None  # the message's query lists exactly the planted row
                (only,) = owner.execute(listed.group(0).rstrip(";")).fetchall()
                assert tuple(only) == (planted_id, "ip", old_dek)

        with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:  # the runbook's remedy
            owner.execute("DELETE FROM vault.tokens WHERE id = %s", (planted_id,))
        assert rotation.reencrypt("CHG-R28-1", batch_size=2) == 0
        assert _last_outcome(env, "reencrypt") == f"ok: 0 values moved, data keys retired: [{old_dek}]"
        assert rotation.reindex("CHG-R28-2", batch_size=100) == 0  # the first run did every other row
        assert vault.wired.keys.refresh().generation.fingerprint_id == pending
