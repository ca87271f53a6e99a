"""vault.tokens holds only the token types the vault makes (review 26, R26-3; migration 0033).

The serving role may INSERT into vault.tokens. A row of type 'bogus' inserted with its
credentials stopped `reencrypt`, `reindex` and `retire-kek-versions` every run until the database
owner deleted it, and the role could plant it again. Against the real PostgreSQL: such a row is
refused; the migration, run on a database that already holds one, stops and says what to do
(nothing applied), and applies once the row is gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from tests.integration.own_database import database_of_its_own
from tokenvault_common.migrations import migrate
from vault_service.domain.token_types import TokenType

MIGRATION = "0033_tokens_of_known_types_and_erase_rows_that_add_up"
LATER = "0034_token_prefix_is_its_type_and_erase_checks_row_types"
_KEYS = (
    "INSERT INTO vault.data_keys (purpose, kek_name, wrapped_key, state) VALUES"
    " ('fingerprint', 'kek', 'vault:v1:f', 'active'), ('encryption', 'kek', 'vault:v1:e', 'active') RETURNING id"
)
_INSERT = (
    "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


@pytest.fixture(scope="module")
def own(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], tuple[int, int]]]:
    """A migrated database of its own, with a fingerprint key and a data key (ids) rows can name."""
    with database_of_its_own(stack_env, "known_types", migrated=True) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            (fingerprint_key,), (data_key,) = admin.execute(_KEYS).fetchall()
        yield env, (fingerprint_key, data_key)


def _row(token: str, token_type: str, keys: tuple[int, int]) -> tuple[object, ...]:
    return (token, token_type, os.urandom(32), *keys, os.urandom(40))


def test_the_serving_role_cannot_insert_a_token_of_a_type_the_vault_never_makes(
    own: tuple[dict[str, str], tuple[int, int]],
) -> None:
    env, keys = own
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault:
        for token_type in ("bogus", "IP", "", "ip "):
            with pytest.raises(errors.CheckViolation) as refused:
                vault.execute(_INSERT, _row("ip_r26planted0000000000a", token_type, keys))
            assert refused.value.diag.constraint_name == "tokens_known_type"
        for member in TokenType:  # the known types still go in
            vault.execute(_INSERT, _row(f"{member.prefix}_{os.urandom(8).hex()[:22]}", member.type_name, keys))
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        stored = admin.execute("SELECT token_type, count(*) FROM vault.tokens GROUP BY 1 ORDER BY 1").fetchall()
    assert stored == sorted((member.type_name, 1) for member in TokenType)


def test_the_migration_stops_on_a_row_of_an_unknown_type_and_says_what_to_do(
    own: tuple[dict[str, str], tuple[int, int]],
) -> None:
    env, keys = own
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        # The database as 0032 left it, with a row the serving role planted before 0033.
        admin.execute("ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_known_type")
        admin.execute("ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_type_of_prefix")  # 0034's
        admin.execute("DELETE FROM public.schema_migrations WHERE version IN (%s, %s)", (MIGRATION, LATER))
        admin.execute(_INSERT, _row("ip_r26planted0000000000b", "bogus", keys))
    with pytest.raises(errors.CheckViolation) as stopped:
        migrate(env["PG_ADMIN_DSN"])
    message = str(stopped.value)
    assert "migration 0033 stopped: vault.tokens holds 1 row(s) of a token type the vault never makes" in message
    assert "nothing was changed" in message
    hint = stopped.value.diag.message_hint or ""
    assert "delete those rows and their kept copies" in hint and "docs/key-rotation.md" in hint
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        assert admin.execute("SELECT 1 FROM public.schema_migrations WHERE version = %s", (MIGRATION,)).fetchall() == []
        assert _constraint(admin) == []
        admin.execute("DELETE FROM vault.tokens WHERE token_type NOT IN ('ip', 'device_id')")
    assert migrate(env["PG_ADMIN_DSN"]) == [MIGRATION, LATER]
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        assert _constraint(admin) == [(True,)]


def _constraint(admin: psycopg.Connection) -> list[tuple[object, ...]]:
    return admin.execute(
        "SELECT convalidated FROM pg_constraint WHERE conrelid = 'vault.tokens'::regclass"
        " AND conname = 'tokens_known_type'"
    ).fetchall()
