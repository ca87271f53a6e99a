"""No login can use data-key ids up: the owner gives each new key the id one past the highest stored (attack 32, F6).

vault.data_keys.id was an integer serial whose sequence the serving role could advance (USAGE, all nextval takes):
3.1 M ids/s from one session, 2^31 in ~11 min, then every key rotation failed. Migration 0058 drops the sequence and
gives ids in an owner's trigger. Here, with the real vault: no sequence any login may advance is an integer one;
the serving role's nextval is refused; an id it names itself is not taken, and an insert it rolls back uses no id;
the vault's rotations still make keys - numbered next - and tokenize under them.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import tokenize_fresh_ip
from tests.integration.own_database import database_of_its_own

INTEGER_MAX = 2**31 - 1
ADVANCEABLE = """
SELECT s.schemaname || '.' || s.sequencename, s.data_type::text, r.rolname::text
FROM pg_catalog.pg_sequences s
JOIN pg_catalog.pg_class c ON c.relname = s.sequencename
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
JOIN pg_catalog.pg_roles r ON r.rolcanlogin AND NOT r.rolsuper
WHERE pg_catalog.has_sequence_privilege(r.oid, c.oid, 'USAGE')
   OR pg_catalog.has_sequence_privilege(r.oid, c.oid, 'UPDATE')
ORDER BY 1, 3
"""
"""Every sequence a non-superuser login may advance (nextval: USAGE; setval: UPDATE), its type and the login."""


def _highest_key(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn) as admin:
        row = admin.execute("SELECT max(id) FROM vault.data_keys").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(120)
def test_no_login_uses_data_key_ids_up_and_rotations_number_keys_next(stack_env: dict[str, str]) -> None:
    with database_of_its_own(stack_env, "keyids", migrated=True) as env, running_vault(env) as vault:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            advanceable = admin.execute(ADVANCEABLE).fetchall()
        assert advanceable and all(kind == "bigint" for _, kind, _ in advanceable), advanceable

        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as serving:
            with pytest.raises(psycopg.Error):  # the sequence is gone; the role had USAGE on it
                serving.execute("SELECT nextval('vault.data_keys_id_seq')")
            next_id = _highest_key(env["PG_ADMIN_DSN"]) + 1
            with serving.transaction(force_rollback=True):
                row = serving.execute(
                    "INSERT INTO vault.data_keys (id, purpose, wrapped_key, kek_name, state, check_value)"
                    " VALUES (%s, 'fingerprint', %s, 'tokenvault-kek', 'pending', %s) RETURNING id",
                    (INTEGER_MAX, f"vault:v1:{os.urandom(24).hex()}", os.urandom(32)),
                ).fetchone()
            assert row is not None and row[0] == next_id, row  # its own id not taken; rolled back: none used

        rotation = vault.wired.rotation("admin:keyids")
        for i in range(2):
            rotation.rotate_encryption_key(f"CHG-KEYIDS-{i}")
            assert _highest_key(env["PG_ADMIN_DSN"]) == next_id + i
        tokenize_fresh_ip(env, vault)  # a new token under the newest key
    print(f"KEY-IDS: advanceable sequences {advanceable}; ids after the rolled-back insert: {next_id}, {next_id + 1}")
