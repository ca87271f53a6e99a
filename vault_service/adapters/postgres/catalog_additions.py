"""Objects the database owner added where the vault's own SQL resolves names, read by oid alone (attack 45).

A45-3: `CREATE FUNCTION pg_catalog.unnest(bytea[])` is an exact match for the vault's `unnest(revealed)`, and
PostgreSQL prefers it to the built-in `unnest(anyarray)` in every session whatever the search path (the vault
pins `pg_catalog, pg_temp`, and this is pg_catalog): it emptied the erased-token set's read. A table inheriting
from `vault.tokens` in another schema fed its rows to every `FROM vault.tokens`, outside the parent's unique
constraints. A45-4: `pg_catalog.format(text, text, "char")` made the schema check print every trigger enabled.

PostgreSQL itself ships nothing in pg_catalog with an oid at or above 16384
(FirstNormalObjectId: oids below it are assigned by initdb; after a wraparound the counter starts there
again), and the migrations create nothing there either (checked on a fresh run, PostgreSQL 15.18: none;
plpgsql's objects are initdb's). So every function, operator, type, relation, collation, conversion, operator
class or family in that schema at or above it, every cast between two built-in types at or above it, and
every trigger or rule on a relation of its at or above it, is the owner's addition; so is every
inheritance or partition link whose parent or child is a relation of schema `vault` (the migrations make none),
and every vault relation with row-level security enabled or forced, every policy and every rule on one (the
migrations make none either). A46-2: a policy the owner added for the length of one call hid the rows from an
erase row on from Detokenize's `max(id)` alone, so the reveal's record said its fetch came before the erasure; the
serving sessions now run with `row_security = off` (session_settings.py), which fails such a statement, and a
replica does not start, or reports its database unhealthy, while such a filter stands.

The query that finds them must not itself resolve to what it looks for: it compares oid and name columns only,
with operators qualified `OPERATOR(pg_catalog.=)` on operands of exactly their types (oid = oid, name = name:
an exact match for a built-in, which no addition can displace - a second operator of the same name and types in
pg_catalog cannot be created), typed literals read by their types' input functions, no function call, no cast
but none; relations are named schema-qualified (the session's own temporary schema is searched before
pg_catalog for unqualified relation names). Only once something is found are its names read (reg* output).
What it cannot see: a superuser editing the catalog rows themselves (`UPDATE pg_proc`, a replaced view of
pg_catalog keeping its oid) - no query on the catalog can be trusted against that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.types.numeric import Oid
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres.errors import translated
from vault_service.domain.errors import CatalogCheckInterrupted, CatalogUnread

log = logging.getLogger(__name__)

FIRST_NORMAL_OBJECT_ID = 16384
"""PostgreSQL's FirstNormalObjectId: every oid below it is the server's (initdb's), every one from it on is not."""

_EQ = "OPERATOR(pg_catalog.=)"
_AT_LEAST_NORMAL = f"OPERATOR(pg_catalog.>=) '{FIRST_NORMAL_OBJECT_ID}'::pg_catalog.oid"
_BUILT_IN = f"OPERATOR(pg_catalog.<) '{FIRST_NORMAL_OBJECT_ID}'::pg_catalog.oid"


def _in_system_schemas(column: str) -> str:
    return f"EXISTS (SELECT FROM system_schemas s WHERE s.oid {_EQ} {column})"


def _on_system_relation(column: str) -> str:
    return (
        f"EXISTS (SELECT FROM pg_catalog.pg_class r JOIN system_schemas s ON s.oid {_EQ} r.relnamespace"
        f" WHERE r.oid {_EQ} {column})"
    )


def _in_vault(column: str) -> str:
    return f"EXISTS (SELECT FROM vault_relations v WHERE v.oid {_EQ} {column})"


_NAMESPACED = (  # (kind, catalog, its oid column prefix's namespace column)
    ("function", "pg_proc", "pronamespace"),
    ("operator", "pg_operator", "oprnamespace"),
    ("type", "pg_type", "typnamespace"),
    ("relation", "pg_class", "relnamespace"),
    ("collation", "pg_collation", "collnamespace"),
    ("conversion", "pg_conversion", "connamespace"),
    ("operator class", "pg_opclass", "opcnamespace"),
    ("operator family", "pg_opfamily", "opfnamespace"),
)

_FILTERS = [  # what makes a vault table's rows read or written other than as stored (attack 46, A46-2)
    "SELECT 'row security', c.oid, NULL FROM pg_catalog.pg_class c"
    f" WHERE (c.relrowsecurity OR c.relforcerowsecurity) AND {_in_vault('c.oid')}",
    f"SELECT 'policy', x.oid, NULL FROM pg_catalog.pg_policy x WHERE {_in_vault('x.polrelid')}",
    f"SELECT 'vault rule', x.oid, NULL FROM pg_catalog.pg_rewrite x WHERE {_in_vault('x.ev_class')}",
]


def _additions(filters: bool) -> str:
    return "\n".join(
        [
            "WITH system_schemas AS (",
            "  SELECT n.oid FROM pg_catalog.pg_namespace n",
            f"   WHERE n.nspname {_EQ} 'pg_catalog'::pg_catalog.name",
            "), vault_relations AS (",
            f"  SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid {_EQ} c.relnamespace",
            f"   WHERE n.nspname {_EQ} 'vault'::pg_catalog.name",
            ")",
            "\nUNION ALL\n".join(
                [
                    *(
                        f"SELECT '{kind}' AS kind, x.oid, NULL::pg_catalog.oid AS parent FROM pg_catalog.{catalog} x"
                        f" WHERE x.oid {_AT_LEAST_NORMAL} AND {_in_system_schemas('x.' + column)}"
                        for kind, catalog, column in _NAMESPACED
                    ),
                    f"SELECT 'cast', x.oid, NULL FROM pg_catalog.pg_cast x WHERE x.oid {_AT_LEAST_NORMAL}"
                    f" AND x.castsource {_BUILT_IN} AND x.casttarget {_BUILT_IN}",
                    f"SELECT 'trigger', x.oid, NULL FROM pg_catalog.pg_trigger x WHERE x.oid {_AT_LEAST_NORMAL}"
                    f" AND {_on_system_relation('x.tgrelid')}",
                    f"SELECT 'rule', x.oid, NULL FROM pg_catalog.pg_rewrite x WHERE x.oid {_AT_LEAST_NORMAL}"
                    f" AND {_on_system_relation('x.ev_class')}",
                    "SELECT 'inheritance', x.inhrelid, x.inhparent FROM pg_catalog.pg_inherits x"
                    f" WHERE {_in_vault('x.inhparent')} OR {_in_vault('x.inhrelid')}",
                    *(_FILTERS if filters else []),
                ]
            ),
        ]
    )


CATALOG_ADDITIONS = _additions(filters=True)
"""(kind, oid, parent oid for an inheritance link) of each object the server did not ship in pg_catalog, of each
inheritance link touching a vault relation, and of each vault relation with row-level security enabled (or forced),
each policy and each rule on one (no migration makes any). Column and operator comparisons only (a boolean column
is tested as it is: `OR` is no operator, nothing to resolve). Read at start and in each key-check round."""

CATALOG_ADDITIONS_BUT_FILTERS = _additions(filters=False)
"""The same without row security, policies and rules on vault relations: `audit verify`'s schema check compares
those with the migrations' manifest and names them already (schema_catalog.py)."""


def _named(catalog: str, namespace: str, printed: str) -> str:
    return (
        f"SELECT n.nspname, x.oid::pg_catalog.{printed} FROM pg_catalog.{catalog} x JOIN pg_catalog.pg_namespace n"
        f" ON n.oid {_EQ} x.{namespace} WHERE x.oid {_EQ} %s"
    )


def _plain(catalog: str, namespace: str, name: str) -> str:
    return (
        f"SELECT n.nspname, x.{name} FROM pg_catalog.{catalog} x JOIN pg_catalog.pg_namespace n"
        f" ON n.oid {_EQ} x.{namespace} WHERE x.oid {_EQ} %s"
    )


_DESCRIBE = {  # once something is found: (schema, name), the name printed by the reg* types' output functions
    "function": _named("pg_proc", "pronamespace", "regprocedure"),
    "operator": _named("pg_operator", "oprnamespace", "regoperator"),
    "type": _named("pg_type", "typnamespace", "regtype"),
    "relation": _named("pg_class", "relnamespace", "regclass"),
    "collation": _plain("pg_collation", "collnamespace", "collname"),
    "conversion": _plain("pg_conversion", "connamespace", "conname"),
    "operator class": _plain("pg_opclass", "opcnamespace", "opcname"),
    "operator family": _plain("pg_opfamily", "opfnamespace", "opfname"),
    "cast": (
        "SELECT x.castsource::pg_catalog.regtype, x.casttarget::pg_catalog.regtype FROM pg_catalog.pg_cast x"
        f" WHERE x.oid {_EQ} %s"
    ),
    "trigger": f"SELECT x.tgname, x.tgrelid::pg_catalog.regclass FROM pg_catalog.pg_trigger x WHERE x.oid {_EQ} %s",
    "rule": f"SELECT x.rulename, x.ev_class::pg_catalog.regclass FROM pg_catalog.pg_rewrite x WHERE x.oid {_EQ} %s",
    "vault rule": (
        f"SELECT x.rulename, x.ev_class::pg_catalog.regclass FROM pg_catalog.pg_rewrite x WHERE x.oid {_EQ} %s"
    ),
    "policy": f"SELECT x.polname, x.polrelid::pg_catalog.regclass FROM pg_catalog.pg_policy x WHERE x.oid {_EQ} %s",
    "row security": f"SELECT x.oid::pg_catalog.regclass FROM pg_catalog.pg_class x WHERE x.oid {_EQ} %s",
}


def _describe(conn: Connection[Any], kind: str, oid: int, parent: int | None) -> str:
    """One finding in words; its names as the catalog prints them (the oid alone when they cannot be read)."""
    try:
        with conn.transaction():  # a savepoint: the finding stands whatever its description meets
            if kind == "inheritance":
                names = conn.execute(
                    "SELECT %s::pg_catalog.regclass, %s::pg_catalog.regclass", (Oid(oid), Oid(parent or 0))
                ).fetchone() or ("?", "?")
            else:
                names = conn.execute(_DESCRIBE[kind], (Oid(oid),)).fetchone() or ()
    except Exception as error:
        names = (f"(its name unread: {type(error).__name__})",) * (2 if kind == "inheritance" else 1)
    if kind == "inheritance":
        return (
            f"{names[0]} inherits from (or is a partition of) {names[-1]}: the vault's queries of the parent read"
            " the child's rows, outside the parent's constraints; the migrations make no such link"
        )
    if kind == "row security":
        return (
            f"row-level security is enabled on {names[0]} (ENABLE or FORCE ROW LEVEL SECURITY): a policy can filter"
            " what the vault's queries read; the migrations enable none"
        )
    if kind in ("policy", "vault rule"):
        return (
            f"{'policy' if kind == 'policy' else 'rule'} {' on '.join(str(name) for name in names)} (oid {oid}):"
            f" it {'filters' if kind == 'policy' else 'rewrites'} what the vault's statements on that table read or"
            " write; the migrations create none"
        )
    if kind == "cast":
        named = f"({names[0]} AS {names[-1]})"
    elif kind in ("trigger", "rule"):
        named = " on ".join(str(name) for name in names)
    else:  # (schema, name): the reg* output leaves a name visible on the search path unqualified
        schema, name = (str(names[0]), str(names[-1])) if len(names) == 2 else ("", str(names[0]))
        named = name if not schema or name.startswith(f"{schema}.") else f"{schema}.{name}"
    return (
        f"{kind} {named} (oid {oid}) was added to pg_catalog, which PostgreSQL alone fills:"
        " the vault's SQL may resolve to it"
    )


def read_catalog_additions(conn: Connection[Any], *, filters: bool = True) -> tuple[str, ...]:
    """Each object the owner added where the vault resolves names, each inheritance of a vault relation, in words.

    `filters`: also row-level security, policies and rules on vault relations (CATALOG_ADDITIONS); without them
    for `audit verify`, whose schema check names those.
    """
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        found = conn.execute(CATALOG_ADDITIONS if filters else CATALOG_ADDITIONS_BUT_FILTERS).fetchall()
        return tuple(sorted(_describe(conn, kind, int(oid), parent) for kind, oid, parent in found))


_DOWN_CLASSES = ("08", "57P")
"""SQLSTATE prefixes of a database going away rather than answering: connection exceptions, and the server shutting
down, crashed, not yet accepting connections, the database dropped, a session ended (57P01-57P05)."""

_SERVER_MESSAGE_CHARS = 300
"""How much of the server's primary message a finding quotes (a catalog read's: object names, never row data)."""


def unread_message(error: psycopg.Error) -> str:
    """The finding's words for a catalog the live database refused to let the check read (R40-2)."""
    primary = (error.diag.message_primary or "")[:_SERVER_MESSAGE_CHARS]
    return (
        f"cannot read the catalog to check it: {primary} ({type(error).__name__}, SQLSTATE {error.sqlstate}): the"
        " check of what the database owner added to pg_catalog, of inheritance and of row security, policies and"
        " rules on vault tables cannot vouch for a catalog it cannot read, so it counts as altered (a catalog"
        " privilege taken from PUBLIC, as some hardening guides do, switches the check off as surely as the"
        " owner would); report it to the security team"
    )


INTERRUPTED = {"57014": "query_canceled", "55P03": "lock_not_available"}
"""SQLSTATEs of a catalog check another session can cause without touching the catalog (attack 48, A48-1): a query
cancelled (`pg_cancel_backend` by any session of the vault's own role, or a statement timeout) and a lock timeout.
An outage of that check, retried, never a finding."""

CHECK_RETRY_PAUSES = (0.05, 0.2, 0.8)
"""Seconds waited before each retry of a catalog check that was cancelled or timed out (4 tries, ~1 s in all)."""

InterruptedCheck = Callable[[str], None]
"""Called with the SQLSTATE's name (`INTERRUPTED`'s values) for each try of the check cancelled or timed out."""


def interrupted_message(error: psycopg.Error, tries: int) -> str:
    """What `CatalogCheckInterrupted` says: the check could not complete, why, and that it is no finding (A48-1)."""
    primary = (error.diag.message_primary or "")[:_SERVER_MESSAGE_CHARS]
    return (
        f"the catalog check could not complete: its query was cancelled or timed out on each of {tries} tries"
        f" ({primary}; {type(error).__name__}, SQLSTATE {error.sqlstate}) - not a finding about the catalog, which was"
        " not read: a session of the vault's own database role can cancel its queries (pg_cancel_backend), or a"
        " statement or lock timeout ran out; retry later, and if it lasts look in pg_stat_activity for who cancels it"
    )


def read_checked(
    pool: ConnectionPool,
    *,
    filters: bool,
    on_interrupted: InterruptedCheck | None = None,
    pauses: tuple[float, ...] = CHECK_RETRY_PAUSES,
) -> tuple[str, ...]:
    """`read_catalog_additions` on a pooled connection; an ERROR the live database answers raises CatalogUnread.

    A connection lost, a server going away (SQLSTATE class 08, 57P0x) or none to be had is left to `translated`
    (DatabaseUnavailable, DatabaseUnreachable): an outage, not a finding (review 40, R40-2). A query cancelled or
    timed out (`INTERRUPTED`) is retried after each of `pauses`, each such try logged at WARNING and passed to
    `on_interrupted`; when every try was, CatalogCheckInterrupted (a DatabaseUnavailable): an outage too (A48-1).
    """
    tries = len(pauses) + 1
    for attempt in range(tries):
        try:
            return _read_once(pool, filters)
        except _Interrupted as interrupted:
            error = interrupted.error
            state = str(error.sqlstate)
            log.warning(
                "the catalog check's query was cancelled or timed out (not a finding; retried): a session of the"
                " vault's role may be cancelling it",
                extra={"sqlstate": state, "error": type(error).__name__, "try": attempt + 1, "tries": tries},
            )
            if on_interrupted is not None:
                on_interrupted(INTERRUPTED[state])
            if attempt + 1 == tries:
                raise CatalogCheckInterrupted(interrupted_message(error, tries)) from None
            time.sleep(pauses[attempt])
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class _Interrupted(Exception):
    """A try of the catalog check cancelled or timed out (`INTERRUPTED`): retried by `read_checked`."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(error.sqlstate)
        self.error = error


def _read_once(pool: ConnectionPool, filters: bool) -> tuple[str, ...]:
    """One try of the check on a pooled connection: an interruption raised as `_Interrupted`, else CatalogUnread."""
    with pool.connection() as conn:
        try:
            return read_catalog_additions(conn, filters=filters)
        except psycopg.Error as error:
            state = error.sqlstate
            if state is None or state.startswith(_DOWN_CLASSES) or conn.closed or conn.broken:
                raise
            if state in INTERRUPTED:
                raise _Interrupted(error) from None
            raise CatalogUnread(unread_message(error)) from None


class PostgresCatalogAdditions:
    """What the owner added to pg_catalog, inheritance of vault relations (A45-3/A45-4), their filters (A46-2).

    Row-level security enabled or forced, policies and rules on vault relations.
    """

    def __init__(self, pool: ConnectionPool, on_interrupted: InterruptedCheck | None = None) -> None:
        self._pool = pool
        self._on_interrupted = on_interrupted

    @translated
    def catalog_additions(self) -> tuple[str, ...]:
        """Each finding in words (none on a database the server and the migrations alone made).

        CatalogUnread when the live database answers the check with an error; DatabaseUnavailable (or
        DatabaseUnreachable) when it is down; CatalogCheckInterrupted when its query was cancelled or timed out on
        every try (attack 48, A48-1), each such try passed to `on_interrupted` (a metric).
        """
        return read_checked(self._pool, filters=True, on_interrupted=self._on_interrupted)
