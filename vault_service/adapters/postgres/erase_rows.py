"""The audit log's erase rows as the erased-token set reads them (`EraseRows`): by pages, each row whole with its link.

Read by `ErasedTokens.learn` (service/erased_tokens.py) at start and each key-check round, through the token store's
pool; rows learned near the head are handed to the audit upkeep's check (`remember_erase_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres.audit_records import (
    HASH_OF,
    RECORD_COLUMNS,
    RECORD_SIZE,
    audit_record,
    record_cursor,
)
from vault_service.adapters.postgres.errors import translated
from vault_service.domain.anchoring import AppendedRows, Link
from vault_service.domain.audit import MAX_ROW_BYTES
from vault_service.service.ports import EraseRow, EraseRowsPage

# The erase rows that name erased tokens, read by id from near where the last read ended: each row whole, as the
# chain trigger hashed it (`revealed` in binary, read by `record_cursor`), and the `prev_hash` of the row after it,
# so the set learns only from rows that hash and link as the chain does (attack 44, A44-3). A row whose fields take
# more than any audit row the vault writes comes with its id only (attack 44, A44-4: one planted row of 40 elements
# of 1 MiB was held whole by every replica); a hash of another length than 32 bytes is read as b"".
# Selected by its action alone, not by what its outcome or `revealed` say (attack 46, A46-1: `outcome LIKE 'ok:%'`
# let the owner hide an old erase row from a starting replica by prefixing its outcome for the length of the read -
# never read, reported nor retried; `revealed` cleared did the same): a row whose fields were changed no longer hashes
# to them, so the set reports it and reads it again each round until it holds (`erased_tokens.erase_row_problem`);
# a row naming no token that holds (a refusal, an erasure of none) teaches nothing. `audit verify` too counts every
# erase row naming tokens whatever its outcome says.
ERASE_ROWS_SQL = (
    f"WITH page AS MATERIALIZED (SELECT {RECORD_COLUMNS} FROM ONLY vault.audit_log"
    " WHERE id > %(after)s AND id <= %(newest)s AND action = 'erase' ORDER BY id LIMIT %(rows)s),"
    f" sized AS (SELECT p.*, {RECORD_SIZE} AS size FROM page p),"
    " cut AS (SELECT z.*, count(*) OVER () AS paged, sum(CASE WHEN z.size > %(cap)s THEN 0 ELSE z.size END)"
    " OVER (ORDER BY z.id ROWS UNBOUNDED PRECEDING) - CASE WHEN z.size > %(cap)s THEN 0 ELSE z.size END AS before"
    " FROM sized z)"
    " SELECT s.id, s.paged, s.size > %(cap)s, "
    + ", ".join(
        f"CASE WHEN s.size <= %(cap)s THEN {HASH_OF.get(c, 's.' + c)} END"
        for c in RECORD_COLUMNS.replace(" ", "").split(",")
    )
    + ", (SELECT CASE WHEN octet_length(n.prev_hash) = 32 THEN n.prev_hash ELSE ''::bytea END"
    " FROM ONLY vault.audit_log n WHERE n.id > s.id ORDER BY n.id LIMIT 1)"
    " FROM cut s WHERE s.before < %(budget)s ORDER BY s.id"
)
_HANDED_OUT = "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM vault.audit_log_id_seq)"
NEWEST_AUDIT_ID_SQL = (
    "SELECT coalesce((SELECT id FROM ONLY vault.audit_log WHERE id <= h.n ORDER BY id DESC LIMIT 1), 0),"
    " coalesce((SELECT max(id) FROM ONLY vault.audit_log), 0)"
    f" FROM (SELECT {_HANDED_OUT} AS n) h"
)
"""The log's newest id within the audit id sequence (as the upkeep's head, audit_chain._HEAD), read before a page,
and its newest id at all. The page ends at the first: a row beyond the sequence was written behind the chain
trigger's back (attack 45, A45-1: one such row for one key-check round moved every later read's start past every
genuine row); the set reports the second (`EraseRowsPage.beyond_id`). The next round's read starts near the first
(bounded by the head this replica anchored: erased_tokens.py), not after the newest erase row (without erasures,
every key-check round re-read the whole log). Index probes: O(1) at any log size."""
NEWEST_AUDIT_ID_UNBOUNDED_SQL = "SELECT coalesce(max(id), 0), coalesce(max(id), 0) FROM ONLY vault.audit_log"
"""The same before migration 0015, where the service may not read the id sequence."""
ERASE_ROWS_PAGE_BYTES = 4 * 1024 * 1024
"""Bytes of row fields one page of erase rows fetches at most, besides its first row (at most MAX_ROW_BYTES): the page
ends before the row that would pass it, and the next page starts there (whatever the owner wrote, a read is bounded)."""


class EraseRowsRead:
    """The erase rows' read of PostgresTokenStore (through its pool; `EraseRows` of the erased-token set)."""

    _pool: ConnectionPool
    _erase_rows: AppendedRows | None

    @translated
    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        """The first `limit` served erase rows after `after_id`, each whole with the next row's link (attack 43/44).

        A range of the primary key from `after_id` on, up to the log's newest id read first (the page says it):
        at start the whole log page by page, then its tail each round.
        """
        with self._pool.connection() as conn, conn.transaction():
            # A row-level security policy (none is shipped) fails this read instead of filtering it: the owner's
            # policy can see the query and hid the erase rows from this read alone (attack 44, A44-1).
            conn.execute("SET LOCAL row_security = off")
            newest, highest = self._newest_audit_ids(conn)
            found = (
                record_cursor(conn)
                .execute(
                    ERASE_ROWS_SQL,
                    {
                        "after": after_id,
                        "newest": newest,
                        "rows": limit,
                        "cap": MAX_ROW_BYTES,
                        "budget": ERASE_ROWS_PAGE_BYTES,
                    },
                )
                .fetchall()
            )
        rows = [
            EraseRow(
                int(row[0]),
                None if row[2] else audit_record(row[3:-1]),
                None if row[-1] is None else bytes(row[-1]),
            )
            for row in found
        ]
        paged = int(found[0][1]) if found else 0  # rows the page held before its byte bound cut it
        return EraseRowsPage(rows, newest, paged >= limit or len(rows) < paged, highest if highest > newest else 0)

    @staticmethod
    def _newest_audit_ids(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """The log's newest id within the audit id sequence, and its newest id at all (NEWEST_AUDIT_ID_SQL)."""
        try:
            with conn.transaction():  # a savepoint: the fallback runs in the same transaction
                row = conn.execute(NEWEST_AUDIT_ID_SQL).fetchone()
        except psycopg.errors.InsufficientPrivilege:  # a database before migration 0015 (the upkeep logs it)
            row = conn.execute(NEWEST_AUDIT_ID_UNBOUNDED_SQL).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def remember_erase_rows(self, rows: Sequence[tuple[int, Link]]) -> None:
        """Have the audit upkeep check that the chain it anchors holds these erase rows, as this replica's own are."""
        if self._erase_rows is not None and rows:
            self._erase_rows.remember(rows)
