"""What guards the vault's tables, read from pg_catalog in one query (attack 43, A43-4/A43-5).

The database owner can drop `tokens_token_unique` and put a live copy beside an erased row (A43-4), add a
trigger deferred to commit that copies each erased row back (A43-5), or replace a function the vault calls
(`vault.erase_tokens`, A41-3). `audit verify` compares what this reads with what the migrations define
(domain/schema_guards.py, the manifest generated from a fresh migration run).

One entry per guard, its key naming it ("trigger keep_erased on vault.tokens") and its value the SHA-256 of
its definition as PostgreSQL prints it: every relation of schema `vault` (its kind and row-security flags),
their constraints, indexes (with validity), triggers (but the internal ones of foreign keys, whose names hold
oids; with their enabled state), rules and row-security policies, and the functions of schemas `vault` and
`watchdog` and every function a trigger on a vault relation runs (pg_get_functiondef: body, language,
security definer and SET clauses). Owners are not compared: who runs the migrations differs per deployment;
nor NOT NULL constraints, which PostgreSQL 18 lists in pg_constraint and earlier versions do not. The text
PostgreSQL prints for a definition may differ between major versions: the manifest is generated on the tests'
server, so a server of another major version can need its own (a difference is reported, never hidden).
The search path is fixed to pg_catalog for the read, so every name is printed schema-qualified whatever the
session's path.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres.catalog_additions import read_catalog_additions

_RELATIONS = "SELECT c.oid, c.relname FROM pg_class c WHERE c.relnamespace = 'vault'::regnamespace"

SCHEMA_CATALOG = f"""
WITH rel AS ({_RELATIONS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))
SELECT 'table vault.' || c.relname,
       format('kind %s rls %s forced %s', c.relkind, c.relrowsecurity, c.relforcerowsecurity)
  FROM pg_class c JOIN rel ON rel.oid = c.oid
UNION ALL
SELECT 'constraint ' || con.conname || ' on vault.' || rel.relname,
       format('%s validated %s', pg_get_constraintdef(con.oid), con.convalidated)
  FROM pg_constraint con JOIN rel ON rel.oid = con.conrelid
 WHERE con.contype <> 'n'
UNION ALL
SELECT 'index ' || ic.relname || ' on vault.' || rel.relname,
       format('%s valid %s ready %s', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready)
  FROM pg_index i JOIN rel ON rel.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
UNION ALL
SELECT 'trigger ' || t.tgname || ' on vault.' || rel.relname,
       format('%s enabled %s', pg_get_triggerdef(t.oid), t.tgenabled)
  FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'rule ' || r.rulename || ' on vault.' || rel.relname,
       format('%s enabled %s', pg_get_ruledef(r.oid), r.ev_enabled)
  FROM pg_rewrite r JOIN rel ON rel.oid = r.ev_class
UNION ALL
SELECT 'policy ' || p.polname || ' on vault.' || rel.relname,
       format('%s | %s | %s | %s | %s', p.polcmd, p.polpermissive,
              (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END, ',' ORDER BY 1)
                 FROM unnest(p.polroles) AS r),
              pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
  FROM pg_policy p JOIN rel ON rel.oid = p.polrelid
UNION ALL
SELECT 'function ' || f.oid::regprocedure::text, pg_get_functiondef(f.oid)
  FROM pg_proc f
 WHERE f.prokind IN ('f', 'p')
   AND (f.pronamespace IN ('vault'::regnamespace, 'watchdog'::regnamespace)
        OR f.oid IN (SELECT t.tgfoid FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid))
"""
"""Every guard of the vault's relations and the functions they and the vault run: (key, definition)."""


def digest(definition: str) -> str:
    """The manifest's form of a definition: its SHA-256, hex."""
    return hashlib.sha256(definition.encode()).hexdigest()


def read_vault_schema(conn: Connection[Any]) -> dict[str, str]:
    """Key -> digest of every guard on `conn`'s database (the search path set to pg_catalog for the read)."""
    with conn.transaction():
        conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        rows = conn.execute(SCHEMA_CATALOG).fetchall()
    return {key: digest(definition) for key, definition in rows}


class PostgresVaultSchema:
    """The vault schema's guards as the database has them now (`audit verify`'s schema check)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def vault_schema(self) -> dict[str, str]:
        """Key -> SHA-256 of the definition, for every guard SCHEMA_CATALOG reads."""
        with self._pool.connection() as conn:
            return read_vault_schema(conn)

    def catalog_additions(self) -> tuple[str, ...]:
        """Objects the owner added to pg_catalog / information_schema, inheritance of vault relations (A45-3)."""
        with self._pool.connection() as conn:
            return read_catalog_additions(conn)
