"""A token's prefix is its row's type, and an erasure's audit row names the types it erased (review 28; 0034).

The serving role may INSERT into vault.tokens. 0033 refused unknown types, but not `ip_…` rows of
type `device_id`: vault.erase_tokens judged a token's type by its prefix, so an erase row could
say `ip` for a device_id erasure (F7). Against the real PostgreSQL: such a row is refused; the
function refuses to erase a row of a type its audit row leaves out (as it would find one in a
database whose owner dropped the CHECK); 0034 stops on such a row with the remedy and applies once
it is gone; and while it waits for its lock, calls queue behind it for about 1 s, not 10 s (F4).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from tests.integration.own_database import database_of_its_own
from tokenvault_common.migrations import MigrationLockTimeout, migrate
from vault_service.domain.token_types import TokenType

MIGRATION = "0034_token_prefix_is_its_type_and_erase_checks_row_types"
_KEYS = (
    "INSERT INTO vault.data_keys (purpose, kek_name, wrapped_key, state) VALUES"
    " ('fingerprint', 'kek', 'vault:v1:f', 'active'), ('encryption', 'kek', 'vault:v1:e', 'active') RETURNING id"
)
_INSERT = (
    "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
_ERASE = "SELECT vault.erase_tokens(%s::text[], %s::bytea[], %s, 'privacy-officer', '5e:41', %s, 'GDPR-1', %s)"
_UNDO = (  # the database as 0033 left it
    "ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_type_of_prefix",
    f"DELETE FROM public.schema_migrations WHERE version = '{MIGRATION}'",
)


@pytest.fixture(scope="module")
def own(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], tuple[int, int]]]:
    """A migrated database of its own, with a fingerprint key and a data key (ids) rows can name."""
    with database_of_its_own(stack_env, "prefix_type", migrated=True) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            (fingerprint_key,), (data_key,) = admin.execute(_KEYS).fetchall()
        yield env, (fingerprint_key, data_key)


def _row(token: str, token_type: str, keys: tuple[int, int]) -> tuple[object, ...]:
    return (token, token_type, os.urandom(32), *keys, os.urandom(40))


def _token(prefix: str) -> str:
    return f"{prefix}_{os.urandom(11).hex()}"


def _validated(admin: psycopg.Connection) -> list[tuple[object, ...]]:
    return admin.execute(
        "SELECT convalidated FROM pg_constraint WHERE conrelid = 'vault.tokens'::regclass"
        " AND conname = 'tokens_type_of_prefix'"
    ).fetchall()


def test_the_serving_role_cannot_insert_a_token_whose_prefix_is_another_type(
    own: tuple[dict[str, str], tuple[int, int]],
) -> None:
    env, keys = own
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault:
        for token, token_type in ((_token("ip"), "device_id"), (_token("dev"), "ip"), (_token("zzz"), "ip")):
            with pytest.raises(errors.CheckViolation) as refused:
                vault.execute(_INSERT, _row(token, token_type, keys))
            assert refused.value.diag.constraint_name == "tokens_type_of_prefix"
        for member in TokenType:  # the vault's own rows still go in
            vault.execute(_INSERT, _row(_token(member.prefix), member.type_name, keys))


def test_erase_refuses_a_row_of_a_type_left_out_and_0034_stops_on_it(
    own: tuple[dict[str, str], tuple[int, int]],
) -> None:
    env, keys = own
    mismatched = _token("ip")
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        for statement in _UNDO:
            admin.execute(statement)
        admin.execute(_INSERT, _row(mismatched, "device_id", keys))  # what the serving role could plant before 0034
        before = admin.execute("SELECT count(*) FROM vault.audit_log").fetchone()
    with psycopg.connect(env["PG_VAULT_DSN"]) as vault, pytest.raises(errors.InvalidParameterValue) as refused:
        vault.execute(_ERASE, ([mismatched], [b"\x01" * 16], 1, "ab" * 32, "ip"))
    assert "token types 'ip' leave out device_id, the type of a row it would erase" in str(refused.value)
    with pytest.raises(errors.CheckViolation) as stopped:
        migrate(env["PG_ADMIN_DSN"])
    assert "migration 0034 stopped: vault.tokens holds 1 row(s) whose token prefix is not its type" in str(
        stopped.value
    )
    assert "docs/key-rotation.md" in (stopped.value.diag.message_hint or "")
    assert mismatched not in str(stopped.value) + (stopped.value.diag.message_hint or "")
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM vault.audit_log").fetchone() == before  # nothing written
        stored = admin.execute("SELECT sealed IS NOT NULL FROM vault.tokens WHERE token = %s", (mismatched,))
        assert stored.fetchone() == (True,)  # nothing erased
        assert _validated(admin) == []  # nothing applied
        admin.execute("DELETE FROM vault.tokens WHERE token = %s", (mismatched,))
    assert migrate(env["PG_ADMIN_DSN"]) == [MIGRATION]
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        assert _validated(admin) == [(True,)]


def test_calls_queue_behind_the_waiting_migration_for_about_a_second(
    own: tuple[dict[str, str], tuple[int, int]],
) -> None:
    env, _ = own
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        for statement in _UNDO:
            admin.execute(statement)
    result: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout):  # one try: the runner's retries (attack 32, F9) aside
            migrate(env["PG_ADMIN_DSN"], lock_attempts=1)
        result["migrate_s"] = time.monotonic() - started

    with psycopg.connect(env["PG_VAULT_DSN"]) as holder:  # a transaction that has read vault.tokens
        holder.execute("SELECT count(*) FROM vault.tokens").fetchone()
        migrating = threading.Thread(target=run)
        migrating.start()
        time.sleep(0.2)
        started = time.monotonic()
        with psycopg.connect(env["PG_VAULT_DSN"]) as caller:  # a Detokenize's read, queued behind it
            caller.execute("SELECT token FROM vault.tokens WHERE token = 'ip_x'").fetchall()
        queued = time.monotonic() - started
        migrating.join(timeout=15)
    assert 0.3 < queued < 2.0, queued  # 0033's 10 s lock_timeout held it up to 10 s
    assert float(str(result["migrate_s"])) < 3.0
    assert migrate(env["PG_ADMIN_DSN"]) == [MIGRATION]  # re-run, nothing holding the table
