"""What guards the vault's tables, read from pg_catalog as raw columns (attack 43, A43-4/A43-5; attack 45, A45-4).

The database owner can drop `tokens_token_unique` and put a live copy beside an erased row (A43-4), add a
trigger deferred to commit that copies each erased row back (A43-5), or replace a function the vault calls
(`vault.erase_tokens`, A41-3). `audit verify` compares what this reads with what the migrations define
(domain/schema_guards.py, the manifest generated from a fresh migration run).

One entry per guard, its key naming it ("trigger keep_erased on vault.tokens") and its value its fields: flags and
names in words (a trigger's state, timing, events, deferral and function; a constraint's validation; owners and
grants), texts as their SHA-256 (a definition, a function's body, a default), so that a difference says how the
guard differs without the schema's text being shipped (W46-9). Guards read: the schemas `vault` and `watchdog`
(owner, grants), every relation of schema `vault` (its kind, row-security flags, owner and grants; sequences too),
each column of its tables (type, NOT NULL, default, identity, generated, collation, column grants), their
constraints, indexes (with validity), triggers (but the internal ones of foreign keys, whose names hold oids; with
their enabled state), rules and row-security policies, and the functions of schemas `vault` and `watchdog` and
every function a trigger on a vault relation runs (pg_get_functiondef: body, language, security definer and SET
clauses; owner and grants). Definitions are PostgreSQL's own text (pg_get_*def, format_type, pg_get_expr, reg*
output: built-ins called on columns of exactly their argument types, which no overload can displace) joined in
Python with the raw flag columns (tgenabled, convalidated, indisvalid, ...): A45-4's `pg_catalog.format(text, text,
"char")` overload made the check's SQL `format('%s enabled %s', ...)` print every trigger enabled. Comparisons are
`OPERATOR(pg_catalog.=)` on exact types, relations schema-qualified; additions to pg_catalog are refused besides
(catalog_additions.py). Grants are compared without the owner's own entry (PostgreSQL 17 added MAINTAIN to the
owner's default privileges); owners by name (the migrations create `tokenvault_owner` and SET ROLE to it). NOT NULL
constraints are compared as the columns' flag (PostgreSQL 18 also lists them in pg_constraint, 15 does not: those
entries are left out). The text PostgreSQL prints may differ between major versions: the manifest is generated on
the tests' server, so a server of another major version can need its own (a difference is reported, never hidden).
The search path is fixed to `pg_catalog, pg_temp` for the read, so every name outside pg_catalog is printed
schema-qualified whatever the session's path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from psycopg import Connection
from psycopg.types.numeric import Oid
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres.catalog_additions import read_checked
from vault_service.adapters.postgres.errors import translated
from vault_service.domain.schema_guards import DIGEST_PREFIX

_EQ = "OPERATOR(pg_catalog.=)"
_SCHEMAS = (
    "SELECT n.oid, n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl FROM pg_catalog.pg_namespace n"
    f" WHERE n.nspname {_EQ} 'vault'::pg_catalog.name OR n.nspname {_EQ} 'watchdog'::pg_catalog.name"
)
_VAULT_RELATIONS = (
    "WITH rel AS (SELECT c.oid, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    f" ON n.oid {_EQ} c.relnamespace WHERE n.nspname {_EQ} 'vault'::pg_catalog.name) "
)
_RELATIONS = _VAULT_RELATIONS + (
    "SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, pg_catalog.pg_get_userbyid(c.relowner),"
    f" c.relacl FROM pg_catalog.pg_class c JOIN rel ON rel.oid {_EQ} c.oid"
)
_COLUMNS = _VAULT_RELATIONS + (
    "SELECT rel.relname, a.attname, a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,"
    " a.attidentity, a.attgenerated, co.collname, pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attacl,"
    " pg_catalog.pg_get_userbyid(c.relowner), a.attisdropped, c.relkind"
    f" FROM pg_catalog.pg_attribute a JOIN rel ON rel.oid {_EQ} a.attrelid"
    f" JOIN pg_catalog.pg_class c ON c.oid {_EQ} a.attrelid"
    f" LEFT JOIN pg_catalog.pg_collation co ON co.oid {_EQ} a.attcollation"
    f" LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid {_EQ} a.attrelid AND d.adnum {_EQ} a.attnum"
    f" WHERE a.attnum OPERATOR(pg_catalog.>) '0'::pg_catalog.int2"
)
_CONSTRAINTS = _VAULT_RELATIONS + (
    "SELECT rel.relname, con.conname, con.contype, pg_catalog.pg_get_constraintdef(con.oid), con.convalidated,"
    " con.condeferrable, con.condeferred"
    f" FROM pg_catalog.pg_constraint con JOIN rel ON rel.oid {_EQ} con.conrelid"
)
_INDEXES = _VAULT_RELATIONS + (
    "SELECT rel.relname, ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready"
    f" FROM pg_catalog.pg_index i JOIN rel ON rel.oid {_EQ} i.indrelid"
    f" JOIN pg_catalog.pg_class ic ON ic.oid {_EQ} i.indexrelid"
)
_TRIGGERS = _VAULT_RELATIONS + (
    "SELECT rel.relname, t.tgname, t.tgisinternal, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled, t.tgfoid,"
    " t.tgtype, t.tgdeferrable, t.tginitdeferred, t.tgfoid::pg_catalog.regprocedure"
    f" FROM pg_catalog.pg_trigger t JOIN rel ON rel.oid {_EQ} t.tgrelid"
)
_RULES = _VAULT_RELATIONS + (
    "SELECT rel.relname, r.rulename, pg_catalog.pg_get_ruledef(r.oid), r.ev_enabled"
    f" FROM pg_catalog.pg_rewrite r JOIN rel ON rel.oid {_EQ} r.ev_class"
)
_POLICIES = _VAULT_RELATIONS + (
    "SELECT rel.relname, p.polname, p.polcmd, p.polpermissive, p.polroles,"
    " pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)"
    f" FROM pg_catalog.pg_policy p JOIN rel ON rel.oid {_EQ} p.polrelid"
)
_DEFINED = " OR ".join(f"f.prokind {_EQ} '{kind}'::pg_catalog.\"char\"" for kind in ("f", "p"))
_FUNCTIONS = (
    "SELECT f.oid, f.oid::pg_catalog.regprocedure, f.prokind,"
    f" CASE WHEN {_DEFINED} THEN pg_catalog.pg_get_functiondef(f.oid) END,"
    " pg_catalog.pg_get_userbyid(f.proowner), f.proacl, f.prosecdef, f.proconfig FROM pg_catalog.pg_proc f"
    f" WHERE f.pronamespace {_EQ} %(vault)s OR f.pronamespace {_EQ} %(watchdog)s"
    f" OR f.oid {_EQ} ANY (%(triggered)s)"
)
_ROLE_NAME = "SELECT pg_catalog.pg_get_userbyid(%s)"

_TABLE_KINDS = {"r": "table", "p": "table", "v": "table", "m": "table", "f": "table", "S": "sequence"}
"""Relation kinds entered as relations (indexes have entries of their own)."""


def digest(definition: str) -> str:
    """The manifest's form of a definition: its SHA-256, hex."""
    return hashlib.sha256(definition.encode()).hexdigest()


def _text(value: object) -> str:
    """A text field as compared: `sha256:<hex>` of it, or 'none'."""
    return "none" if value is None else DIGEST_PREFIX + digest(str(value))


_STATES = {"O": "enabled", "D": "disabled", "R": "enabled on replicas only", "A": "enabled always (replicas too)"}
"""tgenabled / ev_enabled in words (`session_replication_role` decides which fire)."""
_CONSTRAINT_KINDS = {
    "c": "check",
    "f": "foreign key",
    "p": "primary key",
    "u": "unique",
    "t": "trigger",
    "x": "exclusion",
}
_RELATION_KINDS = {
    "r": "ordinary table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
}
_FUNCTION_KINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window function"}
_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_TRIGGER_EVENTS = ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))
"""tgtype's event bits (PostgreSQL's TRIGGER_TYPE_*): row 1, before 2, instead 64."""


def _state(code: object) -> str:
    return _STATES.get(str(code), f"state {code}")


def _deferral(deferrable: object, deferred: object) -> str:
    if not deferrable:
        return "not deferrable"
    return "deferrable, initially deferred" if deferred else "deferrable, initially immediate"


def _trigger_fields(tgtype: int, deferrable: object, deferred: object, function: object) -> dict[str, str]:
    """A trigger's timing, events, level, deferral and function, from tgtype's bits and the raw columns."""
    timing = "INSTEAD OF" if tgtype & 64 else "BEFORE" if tgtype & 2 else "AFTER"
    events = " OR ".join(name for bit, name in _TRIGGER_EVENTS if tgtype & bit)
    return {
        "timing": timing,
        "events": events,
        "level": "row" if tgtype & 1 else "statement",
        "deferral": _deferral(deferrable, deferred),
        "function": str(function),
    }


def _acl_items(acl: object) -> list[str]:
    """An aclitem[] as psycopg returns it (its text, or a list) -> its items."""
    if acl is None:
        return []
    if isinstance(acl, list):
        return [str(item) for item in acl]
    text, items, item, quoted = str(acl).strip("{}"), [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append(item)
            item = ""
        else:
            item += char
    return [*items, item] if item else items


def grants(acl: object, owner: str) -> str:
    """The grants of an object but its owner's own (which PostgreSQL's version changes), sorted; 'default' for none."""
    if acl is None:
        return "default"
    kept = sorted(item for item in _acl_items(acl) if item.split("=", 1)[0].strip('"') != owner)
    return ",".join(kept) or "owner only"


def _flag(value: object) -> str:
    return "" if value is None else str(value)


def read_vault_schema(conn: Connection[Any]) -> dict[str, dict[str, str]]:
    """Key -> fields of every guard on `conn`'s database (the search path set to pg_catalog for the read).

    A field is a flag or a name as PostgreSQL holds it, in words (a trigger's state, timing, events,
    deferral and function; a constraint's validation; an owner; grants), or the SHA-256 of a text
    (`sha256:<hex>`: a definition, a function's body, a default, a policy's expressions): a difference
    says which field moved and, for a flag, from what to what (W46-9), without the schema's text.
    """
    found: dict[str, dict[str, str]] = {}
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        namespaces: dict[str, int] = {}
        for oid, name, owner, acl in conn.execute(_SCHEMAS).fetchall():
            namespaces[name] = oid
            found[f"schema {name}"] = {"owner": owner, "grants": grants(acl, owner)}
        for name, kind, rls, forced, owner, acl in conn.execute(_RELATIONS).fetchall():
            if kind in ("i", "I"):
                continue
            found[f"{_TABLE_KINDS.get(kind, 'relation')} vault.{name}"] = {
                "kind": _RELATION_KINDS.get(str(kind), str(kind)),
                "row security": "enabled" if rls else "disabled",
                "forced row security": "forced" if forced else "not forced",
                "owner": owner,
                "grants": grants(acl, owner),
            }
        for row in conn.execute(_COLUMNS).fetchall():
            relation, column, number, kind, not_null, identity, generated, collation, default, acl, owner = row[:11]
            dropped = row[11]
            if _TABLE_KINDS.get(row[12]) != "table":  # an index's or a sequence's columns are its definition's
                continue
            if dropped:  # a dropped column keeps its number: named by it, as the table's shape
                found[f"column number {number} of vault.{relation}"] = {"state": "dropped"}
                continue
            found[f"column {column} of vault.{relation}"] = {
                "number": str(number),
                "type": kind,
                "null": "NOT NULL" if not_null else "nullable",
                "identity": _flag(identity) or "none",
                "generated": _flag(generated) or "none",
                "collation": _flag(collation) or "none",
                "default": _text(default),
                "grants": grants(acl, owner),
            }
        for relation, name, kind, definition, validated, deferrable, deferred in conn.execute(_CONSTRAINTS).fetchall():
            if kind != "n":  # PostgreSQL 18's NOT NULL entries: the columns' flag says it on every version
                found[f"constraint {name} on vault.{relation}"] = {
                    "kind": _CONSTRAINT_KINDS.get(str(kind), str(kind)),
                    "validation": "validated" if validated else "not validated",
                    "deferral": _deferral(deferrable, deferred),
                    "definition": _text(definition),
                }
        for relation, name, definition, valid, ready in conn.execute(_INDEXES).fetchall():
            found[f"index {name} on vault.{relation}"] = {
                "validity": "valid" if valid else "invalid",
                "readiness": "ready" if ready else "not ready",
                "definition": _text(definition),
            }
        triggered: list[int] = []
        for row in conn.execute(_TRIGGERS).fetchall():
            relation, name, internal, definition, enabled, function, tgtype, deferrable, deferred, called = row
            triggered.append(int(function))
            if not internal:
                found[f"trigger {name} on vault.{relation}"] = {
                    "state": _state(enabled),
                    **_trigger_fields(int(tgtype), deferrable, deferred, called),
                    "definition": _text(definition),
                }
        for relation, name, definition, enabled in conn.execute(_RULES).fetchall():
            found[f"rule {name} on vault.{relation}"] = {"state": _state(enabled), "definition": _text(definition)}
        for relation, name, command, permissive, roles, using, checked in conn.execute(_POLICIES).fetchall():
            found[f"policy {name} on vault.{relation}"] = {
                "command": _POLICY_COMMANDS.get(str(command), str(command)),
                "mode": "permissive" if permissive else "restrictive",
                "roles": _role_names(conn, roles),
                "using": _text(using),
                "with check": _text(checked),
            }
        wanted = {
            "vault": Oid(namespaces.get("vault", 0)),
            "watchdog": Oid(namespaces.get("watchdog", 0)),
            "triggered": [Oid(function) for function in triggered],
        }
        for _, name, kind, definition, owner, acl, definer, settings in conn.execute(_FUNCTIONS, wanted).fetchall():
            found[f"function {name}"] = {
                "kind": _FUNCTION_KINDS.get(str(kind), str(kind)),
                "security": "definer" if definer else "invoker",
                "settings": ", ".join(settings) if settings else "none",
                "owner": owner,
                "grants": grants(acl, owner),
                "definition": _text(definition),
            }
    return found


def _role_names(conn: Connection[Any], roles: Iterable[int]) -> str:
    """A policy's roles by name (0: public), sorted."""
    names = []
    for role in roles:
        (name,) = ("public",) if role == 0 else conn.execute(_ROLE_NAME, (Oid(role),)).fetchone() or ("?",)
        names.append(str(name))
    return ",".join(sorted(names))


class PostgresVaultSchema:
    """The vault schema's guards as the database has them now (`audit verify`'s schema check)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def vault_schema(self) -> dict[str, dict[str, str]]:
        """Key -> fields (flags in words, texts as SHA-256) of every guard `read_vault_schema` reads."""
        with self._pool.connection() as conn:
            return read_vault_schema(conn)

    @translated
    def catalog_additions(self) -> tuple[str, ...]:
        """Objects the owner added to pg_catalog, inheritance of vault relations (A45-3).

        Policies, row security and rules on vault relations are left to `vault_schema`, compared with the manifest.
        CatalogUnread when the live database answers the check with an error (R40-2: verify names it).
        """
        return read_checked(self._pool, filters=False)
