"""An erased value survives in no PostgreSQL statistics (sixth insider round, Break 3).

ANALYZE copies up to about 100 values of each column into pg_statistic, which pg_stats shows
to every role that may read the column. Before the fix the sealed values and fingerprints of
vault.tokens were among them, an erasure left them there, and the serving role's identity
opened an erased value from pg_stats. Each test runs on a database of its own (real Postgres,
and the real vault service where values must be genuine), migrated by the project's migrator.
"""

from __future__ import annotations

import secrets
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import running_vault, stack_identity
from tests.integration.own_database import database_of_its_own
from tokenvault_client import TokenType, VaultClient
from tokenvault_common.migrations import MIGRATIONS_DIR, migrate

SECRET_COLUMNS = {
    ("tokens", "sealed"),
    ("tokens", "fingerprint"),
    ("tokens", "next_fingerprint"),
    ("resealed_values", "sealed"),
    ("data_keys", "wrapped_key"),
    ("replaced_wrapped_keys", "wrapped_key"),
}
"""Every column of schema vault holding a sealed value, a fingerprint or key material."""
THE_FIX = "_no_statistics_of_values"
"""How the migration that fixes it ends its name (its number is whatever was free when it landed)."""


@pytest.fixture
def own_database(stack_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The stack's settings pointed at an empty database of this test's own (not migrated yet)."""
    with database_of_its_own(stack_env, "stats", checkpoint_file=tmp_path / "checkpoints.jsonl") as env:
        yield env


def _admin(env: dict[str, str], statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _columns_with_statistics(env: dict[str, str]) -> set[tuple[str, str]]:
    """(table, column) of schema vault with a row in pg_statistic (read as the superuser)."""
    rows = _admin(
        env,
        "SELECT c.relname, a.attname FROM pg_statistic s JOIN pg_class c ON c.oid = s.starelid"
        " JOIN pg_attribute a ON a.attrelid = s.starelid AND a.attnum = s.staattnum"
        " WHERE c.relnamespace = 'vault'::regnamespace",
    )
    return {(r[0], r[1]) for r in rows}


def _in_pg_statistic(env: dict[str, str]) -> str:
    """Every value kept in the database's pg_statistic, as text (bytea in hex), read as the superuser."""
    rows = _admin(
        env,
        "SELECT concat_ws(' ', stavalues1::text, stavalues2::text, stavalues3::text, stavalues4::text,"
        " stavalues5::text) FROM pg_statistic",
    )
    return " ".join(r[0] for r in rows)


def _in_pg_stats_as_the_service(env: dict[str, str]) -> str:
    """Every value pg_stats shows the serving role (tokenvault_vault), as text (bytea in hex)."""
    with psycopg.connect(env["PG_VAULT_DSN"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("tokenvault_vault",)
        rows = conn.execute(
            "SELECT concat_ws(' ', most_common_vals::text, histogram_bounds::text, most_common_elems::text)"
            " FROM pg_stats"
        ).fetchall()
    return " ".join(r[0] for r in rows)


def _client(env: dict[str, str], address: str, who: str) -> VaultClient:
    return VaultClient.connect(address, stack_identity(env, who))


def test_an_erased_value_and_its_kept_copy_are_in_no_statistics_after_analyze(own_database: dict[str, str]) -> None:
    env = own_database
    assert migrate(env["PG_ADMIN_DSN"])
    values = [(TokenType.DEVICE_ID, f"stats-test-device-{i:04d}") for i in range(150)]
    with running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]) as vault:
        with _client(env, vault.address, "etl-service") as etl:
            tokens = [str(t) for t in etl.tokenize(values)]
        # A data key rotation: each value's previous sealed value is kept in vault.resealed_values.
        rotation = vault.wired.rotation("admin:stats-test")
        rotation.rotate_encryption_key("CHG-STATS-1")
        assert rotation.reencrypt("CHG-STATS-1", batch_size=100) == len(tokens)
        _admin(env, "ANALYZE vault.tokens, vault.resealed_values, vault.data_keys")  # as autovacuum does

        # The attacker's pick: a token whose sealed value the serving role reads in pg_stats, if any.
        shown = _in_pg_stats_as_the_service(env)
        stored = {
            token: (sealed.hex(), fingerprint.hex())
            for token, sealed, fingerprint in _admin(
                env, "SELECT token, sealed, fingerprint FROM vault.tokens WHERE token = ANY(%s)", (tokens,)
            )
        }
        victim = next((t for t in tokens if stored[t][0] in shown or stored[t][1] in shown), tokens[0])
        kept = [r[0].hex() for r in _admin(env, "SELECT sealed FROM vault.resealed_values WHERE token = %s", (victim,))]
        assert len(kept) == 1
        secrets_of_victim = {"sealed value": stored[victim][0], "fingerprint": stored[victim][1], "kept copy": kept[0]}

        with _client(env, vault.address, "privacy-officer") as officer:
            assert officer.erase([victim], "GDPR-STATS-TEST") == [None]
    assert _admin(env, "SELECT sealed, fingerprint FROM vault.tokens WHERE token = %s", (victim,)) == [(None, None)]

    shown = _in_pg_stats_as_the_service(env)
    kept_anywhere = _in_pg_statistic(env)
    assert [name for name, value in secrets_of_victim.items() if value in shown] == []
    assert [name for name, value in secrets_of_victim.items() if value in kept_anywhere] == []
    # Stronger: ANALYZE keeps nothing of a secret column, so no later erasure can leave one behind.
    assert _columns_with_statistics(env) & SECRET_COLUMNS == set()


def _migrations_up_to_the_fix(tmp_path: Path) -> tuple[Path, Path]:
    """Two directories: the migrations before the fix, and those up to it (all of them where there is none)."""
    every = sorted(MIGRATIONS_DIR.glob("*.sql"))
    fix = next((i for i, path in enumerate(every) if path.stem.endswith(THE_FIX)), len(every))
    before, up_to = tmp_path / "before-the-fix", tmp_path / "up-to-the-fix"
    for directory, paths in ((before, every[:fix]), (up_to, every[: fix + 1])):
        directory.mkdir()
        for path in paths:
            shutil.copy(path, directory / path.name)
    return before, up_to


_FILL = """
SET session_replication_role = replica;  -- synthetic rows: no audit triggers
INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state)
SELECT 'encryption', 'vault:v1:' || encode(sha256(('key' || g)::bytea), 'base64'), 'kek', 'retired'
FROM generate_series(1, 150) g;
INSERT INTO vault.replaced_wrapped_keys (key_id, wrapped_key, replaced_by)
SELECT g, 'vault:v1:' || encode(sha256(('old key' || g)::bytea), 'base64'), 'test' FROM generate_series(1, 150) g;
INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed, next_fingerprint)
SELECT 'ip_' || substr(md5('stats' || g), 1, 22), 'ip', sha256(('fp' || g)::bytea), 1, 1,
       sha256(('sealed' || g)::bytea) || sha256(('more' || g)::bytea), sha256(('next' || g)::bytea)
FROM generate_series(1, 300) g;
INSERT INTO vault.resealed_values (token, dek_id, sealed, replaced_by)
SELECT 'ip_' || substr(md5('stats' || g), 1, 22), 1, sha256(('kept' || g)::bytea) || sha256(('k' || g)::bytea), 't'
FROM generate_series(1, 300) g;
SET session_replication_role = origin;
ANALYZE vault.tokens, vault.resealed_values, vault.data_keys, vault.replaced_wrapped_keys;
"""

_SHAPE = {
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid) FROM pg_trigger"
    " WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'vault'::regnamespace)"
    " ORDER BY 1, 2",
    "indexes": "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready"
    " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'vault'::regnamespace ORDER BY 1",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'vault'::regnamespace ORDER BY 1, 2",
    "columns": "SELECT attrelid::regclass::text, attname, format_type(atttypid, atttypmod), attnotnull, attacl::text"
    " FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped"
    " AND attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'vault'::regnamespace AND relkind = 'r')"
    " ORDER BY 1, 2",
    "rows": "SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM vault.tokens t",
}


def _shape(env: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: _admin(env, statement) for name, statement in _SHAPE.items()}


@pytest.fixture
def owner_migrator(own_database: dict[str, str]) -> Iterator[str]:
    """A migrator that is no superuser: the database's owner and a member of the vault's owner role.

    As on a managed database (docs/production.md: the migrations run as the owner role), where
    nobody may write pg_statistic. Returns its DSN.
    """
    role = "migrator_" + uuid.uuid4().hex[:10]
    password = secrets.token_urlsafe(18)
    database = own_database["PG_ADMIN_DSN"].rsplit("/", 1)[1].split("?")[0]
    _admin(own_database, f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE tokenvault_owner")
    _admin(own_database, f"ALTER DATABASE {database} OWNER TO {role}")  # schema public is its database owner's
    try:
        yield make_conninfo(own_database["PG_ADMIN_DSN"], user=role, password=password)
    finally:
        _admin(own_database, f"REASSIGN OWNED BY {role} TO CURRENT_USER")  # the database too
        _admin(own_database, f"DROP OWNED BY {role}")
        _admin(own_database, f"DROP ROLE {role}")


@pytest.mark.parametrize("migrator", ["superuser", "owner"])
def test_the_migration_removes_the_statistics_already_collected(
    own_database: dict[str, str], owner_migrator: str, tmp_path: Path, migrator: str
) -> None:
    env = own_database
    before_the_fix, up_to_the_fix = _migrations_up_to_the_fix(tmp_path)
    assert migrate(env["PG_ADMIN_DSN"], before_the_fix)
    _admin(env, _FILL)
    assert _columns_with_statistics(env) >= SECRET_COLUMNS  # the leak: ANALYZE kept values of each
    before = _shape(env)

    if migrator == "owner":
        role = conninfo_to_dict(owner_migrator)["user"]
        _admin(env, f"GRANT SELECT, INSERT ON public.schema_migrations TO {role}")
    applied = migrate(env["PG_ADMIN_DSN"] if migrator == "superuser" else owner_migrator, up_to_the_fix)
    assert [stem for stem in applied if stem.endswith(THE_FIX)], f"no migration {THE_FIX} among {applied}"

    assert _columns_with_statistics(env) & SECRET_COLUMNS == set()
    targets = _admin(
        env,
        "SELECT c.relname, a.attname, a.attstattarget FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = 'vault'::regnamespace AND a.attnum > 0",
    )
    assert {(t, c) for t, c, target in targets if target == 0} == SECRET_COLUMNS
    # Nothing else changed: the same triggers (recreated where the owner's path had to), indexes,
    # constraints, columns with their grants, and rows.
    assert _shape(env) == before
    _admin(env, "ANALYZE vault.tokens, vault.resealed_values, vault.data_keys, vault.replaced_wrapped_keys")
    assert _columns_with_statistics(env) & SECRET_COLUMNS == set()
    assert {("tokens", "token"), ("tokens", "dek_id")} <= _columns_with_statistics(env)  # the others still have theirs

    # Erasure works, and its trigger (recreated on the owner's path) still deletes the kept copy.
    token = _admin(env, "SELECT token FROM vault.tokens ORDER BY id LIMIT 1")[0][0]
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as service:
        erased = service.execute(
            "SELECT vault.erase_tokens(%s, 1, 'privacy-officer', '1', 'sha', 'GDPR-STATS-MIGRATION', 'ip')", ([token],)
        ).fetchall()
    assert erased == [(token,)]
    assert _admin(env, "SELECT count(*) FROM vault.resealed_values WHERE token = %s", (token,)) == [(0,)]


def test_erasure_is_refused_while_a_column_it_clears_may_hold_values_in_statistics(
    own_database: dict[str, str],
) -> None:
    env = own_database
    migrate(env["PG_ADMIN_DSN"])
    _admin(env, _FILL)
    token = _admin(env, "SELECT token FROM vault.tokens ORDER BY id LIMIT 1")[0][0]

    def erase() -> list[tuple[Any, ...]]:
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as service:
            return service.execute(
                "SELECT vault.erase_tokens(%s, %s, 1, 'privacy-officer', '1', 'sha', 'GDPR-STATS-REFUSED', 'ip')",
                ([token], [b"\x01" * 16]),
            ).fetchall()

    # An owner's tuning puts the fingerprint's statistics back.
    _admin(env, "ALTER TABLE vault.tokens ALTER COLUMN fingerprint SET STATISTICS 100")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match=r"vault\.tokens\.fingerprint"):
        erase()
    _admin(env, "ANALYZE vault.tokens")
    _admin(env, "ALTER TABLE vault.tokens ALTER COLUMN fingerprint SET STATISTICS 0")  # the target alone is not enough
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match=r"vault\.tokens\.fingerprint"):
        erase()
    assert _admin(env, "SELECT sealed IS NOT NULL FROM vault.tokens WHERE token = %s", (token,)) == [(True,)]

    _admin(
        env,
        "DELETE FROM pg_statistic WHERE starelid = 'vault.tokens'::regclass"
        " AND staattnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'vault.tokens'::regclass"
        " AND attname = 'fingerprint')",
    )
    assert erase() == [(token,)]
