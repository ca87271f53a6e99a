"""`audit login-rows --token`: the rows of user_logins holding given tokens, verified as erase verifies them (A48-2).

The ETL's database role may insert rows holding a person's token (it learns the token by tokenizing the value, its
job) with no create_date and no signed list, or naming one of its own: 10,001 such rows made `erase` refuse every
erasure of that person (its read of the rows is bounded), and no create_date range of `audit login-rows` found them.
By token, the security team sees them: verified and listed as erase would, or - past the bound - counted by the
signed list they name (no user id, token or value), for the database owner to delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import psycopg

from tokenvault_cli.erase_reach import (
    HOLDING_TOKENS_WHERE,
    MAX_ROWS_CHECKED,
    ROWS_SQL,
    ListFinding,
    RowCheck,
    RowFinding,
    count_rows_holding,
    count_session,
    indexes_problems,
    rows_naming,
    verify_rows,
)
from tokenvault_cli.query import QueryError, database_failure
from tokenvault_cli.row_owners import column_problems, relation_problems
from tokenvault_common.login_row_signatures import DIGEST_BYTES, PublicKeys

LISTS_NAMED = 20
"""How many signed lists a count past the bound names (those named by the most rows first)."""

ROWS_BY_LIST_SQL = f"""
SELECT l.row_manifest::pg_catalog.text, count(*), count(*) FILTER (WHERE l.create_date IS NULL)
FROM public.user_logins AS l
{HOLDING_TOKENS_WHERE}GROUP BY l.row_manifest ORDER BY count(*) DESC, l.row_manifest::pg_catalog.text LIMIT %(limit)s
"""
"""The rows holding the tokens (ROWS_SQL's match), counted by the list they name: (list or NULL, rows, rows with no
create_date). No row is read whole: what the security team is told when more rows hold them than are checked."""

LISTED_SQL = """
SELECT m.manifest_id, (length(m.digests) OPERATOR(pg_catalog./) %(each)s::pg_catalog.int4)::pg_catalog.int8
FROM public.user_login_manifests AS m WHERE m.manifest_id OPERATOR(pg_catalog.=) ANY (%(ids)s::pg_catalog.uuid[])
"""
"""How many rows each list lists (its digests, DIGEST_BYTES each), signature not checked: counted, not read."""

ByList = tuple[str | None, int, int, int | None, int | None]
"""(signed list named, or None for none; rows holding the tokens naming it; of those, rows with no create_date; rows
of user_logins naming it, holding the tokens or not; rows it lists - None: no list, or none by that id).

The last two (attack 49, A49-4): rows the ETL's role inserted naming P's batch list, holding no token, tripped
erase's bound on the lists' rows, and this view - rows holding the token only - counted P's one genuine row."""


def check_rows_holding(
    dsn: str, tokens: Sequence[str], keys: Callable[[], PublicKeys], max_rows: int = MAX_ROWS_CHECKED
) -> tuple[RowCheck, list[RowFinding | ListFinding], list[ByList]]:
    """The rows holding `tokens`, verified with their lists read whole (as `check_rows_between`), in one snapshot.

    Past `max_rows` rows (or the lists' bound): RowCheck.too_many, no finding, and the rows counted by the
    signed list they name instead (at most LISTS_NAMED lists, the most rows first).
    """
    wanted = list(dict.fromkeys(tokens))
    try:
        with count_session(dsn) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            rows = conn.execute(ROWS_SQL, {"tokens": wanted, "limit": max_rows + 1}).fetchall()
            check, findings = verify_rows(conn, rows, keys, whole_lists=True, max_rows=max_rows)
            if check.too_many and not check.lists_too_large:  # the --max-rows-checked to give (walk47, W47-18)
                check = replace(check, rows=count_rows_holding(conn, wanted))
            by_list = _by_list(conn, wanted) if check.too_many else []
            shape = (*relation_problems(conn), *column_problems(conn), *indexes_problems(conn, dsn))  # erase refuses
            return replace(check, table_problems=shape), findings, by_list
    except psycopg.Error as error:
        message = database_failure(error)
        raise QueryError(f"reading the rows of user_logins failed: {message}") from None


def _by_list(conn: psycopg.Connection[Any], tokens: list[str]) -> list[ByList]:
    found = conn.execute(ROWS_BY_LIST_SQL, {"tokens": tokens, "limit": LISTS_NAMED}).fetchall()
    ids = [uuid.UUID(m) for m, _, _ in found if m is not None]
    naming = rows_naming(conn, ids) if ids else {}
    listing = {m: int(n) for m, n in conn.execute(LISTED_SQL, {"ids": ids, "each": DIGEST_BYTES}).fetchall()}
    return [
        (None, int(n), int(undated), None, None)
        if m is None
        else (str(m), int(n), int(undated), naming.get(uuid.UUID(m), 0), listing.get(uuid.UUID(m)))
        for m, n, undated in found
    ]
