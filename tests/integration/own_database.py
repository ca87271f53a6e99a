"""A database of the test's own on the session's PostgreSQL, and migrating it only part of the way.

Tests that plant SQL as the owner, or that upgrade a vault from an older migration, need a
database nobody else uses. `database_of_its_own` creates one, hands back the stack's settings pointed
at it (each DSN keeping its query string, `require_auth=scram-sha-256` included, as the stack
uses it) and drops it afterwards; with `migrated=True` every migration is applied already:
it copies a template the session migrated once (CREATE DATABASE ... TEMPLATE), a fraction
of the cost of running the migrations again for each test. `migrate_before` applies the migrations
that sort before one.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tokenvault_common.migrations import MIGRATIONS_DIR, migrate

SERVICE_DSNS = ("PG_ADMIN_DSN", "PG_VAULT_DSN")
"""The settings re-pointed by default: the migrator's (superuser) and the vault service's."""
EVERY_DSN = (*SERVICE_DSNS, "PG_ETL_DSN", "PG_ANALYST_DSN")
"""Every role's DSN in the stack's settings."""


def with_database(dsn: str, database: str) -> str:
    """`dsn` (a postgresql:// URL) pointed at `database`, its query string (require_auth, ...) kept."""
    base, _, query = dsn.partition("?")
    return base.rsplit("/", 1)[0] + "/" + database + (f"?{query}" if query else "")


_MIGRATED_TEMPLATES: dict[str, str] = {}
"""The migrated template database of each cluster (by its admin DSN), made at its first use."""


def _migrated_template(admin_dsn: str) -> str:
    """The name of a database of `admin_dsn`'s cluster with every migration applied, closed to connections."""
    if admin_dsn not in _MIGRATED_TEMPLATES:
        name = f"migrated_template_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        migrate(with_database(admin_dsn, name))
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            # Copying needs a template nobody is connected to; no one may connect from now on.
            conn.execute(f"ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
        _MIGRATED_TEMPLATES[admin_dsn] = name
    return _MIGRATED_TEMPLATES[admin_dsn]


@contextmanager
def database_of_its_own(
    stack_env: dict[str, str],
    prefix: str,
    *,
    checkpoint_file: Path | None = None,
    dsns: Sequence[str] = SERVICE_DSNS,
    migrated: bool = False,
) -> Iterator[dict[str, str]]:
    """The stack's settings with `dsns` pointed at a new, empty database named `prefix_<random>`.

    A vault on it exports its signed checkpoints to `checkpoint_file`, by default a file of this
    database's own beside the session's (where they would contradict the session database's log). With `migrated`,
    the database has every migration applied (a copy of the session's migrated template). The
    database is dropped on the way out, sessions still connected to it or not.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    template = f" TEMPLATE {_migrated_template(stack_env['PG_ADMIN_DSN'])}" if migrated else ""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}{template}")
    env = {**stack_env, **{key: with_database(stack_env[key], name) for key in dsns}}
    # Never the session's file: another database's checkpoints there contradict the session
    # database's log, and every later audit-verify of the session reads TAMPERED (a CI run, 5 Dec).
    own_file = Path(stack_env["STACK_DIR"]) / "audit" / f"checkpoints-{name}.jsonl"
    env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"] = str(checkpoint_file or own_file)
    try:
        yield env
    finally:
        with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def migrate_before(env: dict[str, str], stem: str) -> list[str]:
    """Apply to `env`'s database the migrations whose name sorts before `stem`; the names applied."""
    with tempfile.TemporaryDirectory(prefix="migrations-before-") as directory:
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.stem < stem:
                shutil.copy(path, Path(directory) / path.name)
        return migrate(env["PG_ADMIN_DSN"], Path(directory))
