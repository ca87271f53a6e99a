"""Key rotation's work on vault.tokens: re-sealing under the active DEK, re-fingerprinting, compacting.

Split from tokens.py (review 18, R18-9): `PostgresTokenStore` takes these methods from
`TokenRekeying`. Each batch is read by its work-list index and written by a SECURITY DEFINER
function that re-checks every row and writes its own audit row (migration 0006): the serving
role cannot UPDATE the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres.errors import translated
from vault_service.adapters.postgres.keys import has_next_fingerprint_key_ids, other_keys
from vault_service.adapters.postgres.sql_arrays import bytea_array, int_array, text_array
from vault_service.service.ports import KeptCopy, Reindexer, Resealer, StoredToken

ROW_COLUMNS = "token, token_type, dek_id, sealed"
"""The columns of vault.tokens a StoredToken is made of, in its order."""


def _stored_token(row: tuple[str, str, int, bytes | None]) -> StoredToken:
    return StoredToken(row[0], row[1], row[2], bytes(row[3]) if row[3] is not None else None)


RESEAL_CONDITION = "sealed IS NOT NULL AND dek_id = ANY(%s)"
"""Rows the re-encryption job works on (`tokens_dek` is its work-list index)."""
RESEAL_CONDITION_SKIPPING = RESEAL_CONDITION + " AND token <> ALL(%s::text[])"
"""The same, without the rows the job set aside (values that do not open under their key; review 28, F2)."""
REINDEX_CONDITION = (
    "fingerprint IS NOT NULL AND fingerprint_key_id = ANY(%s)"
    " AND (next_fingerprint IS NULL OR next_fingerprint_key_id IS DISTINCT FROM %s)"
)
"""Rows the re-fingerprinting job works on (`tokens_fingerprint_key` is its work-list index): key ids, pending key.

Every row whose next fingerprint is not one written under the pending key (migration 0028): a next
fingerprint planted while no key was pending, or written under another, is re-done (attack 24, F2)."""
REINDEX_CONDITION_BEFORE_0028 = "fingerprint IS NOT NULL AND next_fingerprint IS NULL AND fingerprint_key_id = ANY(%s)"
"""The work list while the database has no next_fingerprint_key_id yet (the service is rolled out first)."""
SKIPPING = " AND token <> ALL(%s::text[])"
"""Added to a work list's condition: without the rows the job set aside (values that do not open; attack 27, F6)."""


def _select_batch(
    conn: psycopg.Connection, condition: str, key_column: str, key_ids: list[int], limit: int, *more: object
) -> list[StoredToken]:
    """Up to `limit` rows matching `condition` (`%s`: key ids, then `more`), read by `key_column`'s work-list index.

    Ordered by that column so that the plan walks its work-list index whatever the key ids:
    the connections plan statements once (plan_cache_mode), and without the order the generic
    plan of `... = ANY($1) LIMIT $2` was a sequential scan that stops at the first matches
    (61 ms against 0.3 ms a batch on 300k rows with the old key's rows at the end).
    Not locked (the serving role holds no UPDATE privilege, which FOR UPDATE needs): the
    function that writes the change re-checks each row's state, so a row erased or moved
    meanwhile is left alone, and two jobs at once only repeat work.
    """
    query = _select_batch_query(condition, key_column)
    return [_stored_token(r) for r in conn.execute(query, (key_ids, *more, limit)).fetchall()]


def _select_batch_query(condition: str, key_column: str) -> str:
    return f"SELECT {ROW_COLUMNS} FROM ONLY vault.tokens WHERE {condition} ORDER BY {key_column} LIMIT %s"


class TokenRekeying:
    """The re-encryption and re-fingerprinting batches of PostgresTokenStore (through its pool)."""

    _pool: ConnectionPool
    _next_fingerprint_key_ids = False
    """Whether migration 0028 is applied (looked up until it is: the service is rolled out before it)."""

    @translated
    def reseal_batch(
        self, active_dek_id: int, limit: int, reseal: Resealer, actor: str = "vault-service", skip: Sequence[str] = ()
    ) -> int:
        """Re-seal up to `limit` values under other DEKs with the active one, except `skip`; rows handled.

        `reseal` may leave rows out (a value that does not open: the job sets it aside and passes
        it in `skip` from then on); the count is of the rows read, so the job goes on.
        """
        with self._pool.connection() as conn:
            keys = other_keys(conn, "encryption", active_dek_id)
            if skip:
                rows = _select_batch(conn, RESEAL_CONDITION_SKIPPING, "dek_id", keys, limit, text_array(list(skip)))
            else:
                rows = _select_batch(conn, RESEAL_CONDITION, "dek_id", keys, limit)
            if not rows:
                return 0
            old_dek_ids = {row.token: row.dek_id for row in rows}
            resealed = reseal(rows)
            if not resealed:
                return len(rows)
            tokens, dek_ids, sealed = (list(c) for c in zip(*resealed, strict=True))
            conn.execute(
                "SELECT vault.reseal_tokens(%s::text[], %s::int[], %s::int[], %s::bytea[], %s)",
                (
                    text_array(tokens),
                    int_array([old_dek_ids[t] for t in tokens]),
                    int_array(dek_ids),
                    bytea_array(sealed),
                    actor,
                ),
            )
        return len(rows)

    @translated
    def reindex_batch(
        self,
        pending_key_id: int,
        limit: int,
        reindex: Reindexer,
        actor: str = "vault-service",
        skip: Sequence[str] = (),
    ) -> int:
        """Fingerprint up to `limit` live rows under the pending key, except `skip`; the number of rows read.

        `reindex` may leave rows out (a value that does not open, or under a retired or unknown data key: the
        job sets it aside and passes it in `skip` from then on); the count is of the rows read, so the job goes on.
        """
        with self._pool.connection() as conn:
            if not self._next_fingerprint_key_ids:
                self._next_fingerprint_key_ids = has_next_fingerprint_key_ids(conn)
            old_keys = other_keys(conn, "fingerprint", pending_key_id)
            condition = REINDEX_CONDITION if self._next_fingerprint_key_ids else REINDEX_CONDITION_BEFORE_0028
            more: tuple[object, ...] = (pending_key_id,) if self._next_fingerprint_key_ids else ()
            if skip:
                condition, more = condition + SKIPPING, (*more, text_array(list(skip)))
            rows = _select_batch(conn, condition, "fingerprint_key_id", old_keys, limit, *more)
            if not rows:
                return 0
            refingerprinted = reindex(rows)
            if not refingerprinted:
                return len(rows)
            tokens, fingerprints = (list(c) for c in zip(*refingerprinted, strict=True))
            conn.execute(
                "SELECT vault.set_next_fingerprints(%s::text[], %s::bytea[], %s)",
                (text_array(tokens), bytea_array(fingerprints), actor),
            )
        return len(rows)

    @translated
    def pending_fingerprints_batch(
        self, pending_key_id: int, after_id: int, limit: int
    ) -> tuple[int, list[tuple[StoredToken, bytes]]]:
        """Up to `limit` live rows past row id `after_id` with a next fingerprint under the pending key, with it.

        Also the last row id read (`after_id` when none is left): the re-index's check of the next
        fingerprints it did not write walks the table by its primary key, a batch at a time.
        """
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT id, {ROW_COLUMNS}, next_fingerprint FROM ONLY vault.tokens WHERE id > %s"
                " AND next_fingerprint_key_id = %s AND fingerprint IS NOT NULL ORDER BY id LIMIT %s",
                (after_id, pending_key_id, limit),
            ).fetchall()
        if not rows:
            return after_id, []
        return int(rows[-1][0]), [(_stored_token(r[1:5]), bytes(r[5])) for r in rows]

    @translated
    def kept_copies_batch(self, dek_id: int, after_id: int, limit: int) -> tuple[int, list[KeptCopy]]:
        """Up to `limit` kept copies under `dek_id` past kept id `after_id` of tokens still holding a value.

        With the value each token holds now and its key, and the last kept id read (`after_id` when
        none is left). Through vault.kept_copies (migration 0032): the serving role holds no
        privilege on vault.resealed_values.
        """
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT * FROM vault.kept_copies(%s, %s, %s)", (dek_id, after_id, limit)).fetchall()
        if not rows:
            return after_id, []
        return int(rows[-1][0]), [KeptCopy(r[1], r[2], bytes(r[3]), r[4], bytes(r[5])) for r in rows]

    @translated
    def clear_next_fingerprints(self, found: Sequence[tuple[str, bytes]], actor: str = "vault-service") -> int:
        """Clear the (token, bytes found) next fingerprints the re-index found wrong, if still stored; rows cleared."""
        if not found:
            return 0
        tokens, fingerprints = (list(c) for c in zip(*found, strict=True))
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT vault.clear_next_fingerprints(%s::text[], %s::bytea[], %s)",
                (text_array(tokens), bytea_array(fingerprints), actor),
            ).fetchone()
        return int(row[0]) if row else 0

    @translated
    def compact_batch(self, active_fingerprint_id: int, limit: int, actor: str = "vault-service") -> int:
        """Move next_fingerprint into fingerprint for up to `limit` rows re-indexed under the active key."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT vault.compact_fingerprints(%s, %s, %s)", (active_fingerprint_id, limit, actor)
            ).fetchone()
        return int(row[0]) if row else 0

    @translated
    def fingerprints_left(self, active_fingerprint_id: int, up_to: int) -> int:
        """Live rows whose fingerprint is under another key than the active one, counted up to `up_to`.

        Read by the `tokens_fingerprint_key` index (ordered by its column, as `_select_batch`
        explains), so the check after a compaction costs the rows left, not a scan of the table.
        """
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM ONLY vault.tokens WHERE fingerprint IS NOT NULL"
                " AND fingerprint_key_id = ANY(%s) ORDER BY fingerprint_key_id LIMIT %s) AS left_rows",
                (other_keys(conn, "fingerprint", active_fingerprint_id), up_to),
            ).fetchone()
        return int(row[0]) if row else 0

    @translated
    def work_left(
        self, active_dek_id: int, active_fingerprint_id: int, pending_fingerprint_id: int | None = None
    ) -> dict[str, int]:
        """Rows to re-encrypt, to re-index and to compact.

        `reindex`: while a fingerprint key is pending, the live rows without a next fingerprint under it - the
        re-index's own work list (REINDEX_CONDITION), what the promotion waits for; none while no key is pending.
        `compact`: the live rows whose fingerprint is not under the newest key (the pending one, else the active
        one) yet. Chaos 50, V50-5: `reindex` counted the latter, so after a re-index stopped part-way `status`
        said every row was still to re-index, and the re-run's progress bar, whose total it is, ended short.
        """
        with self._pool.connection() as conn:
            if not self._next_fingerprint_key_ids:
                self._next_fingerprint_key_ids = has_next_fingerprint_key_ids(conn)
            under_another = "next_fingerprint_key_id IS DISTINCT FROM %(pending)s"
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE sealed IS NOT NULL AND dek_id <> %(dek)s),"
                " count(*) FILTER (WHERE fingerprint IS NOT NULL AND fingerprint_key_id <> %(pending)s AND"
                f" (next_fingerprint IS NULL OR {under_another if self._next_fingerprint_key_ids else 'false'})),"
                " count(*) FILTER (WHERE fingerprint IS NOT NULL AND fingerprint_key_id <> %(newest)s)"
                " FROM ONLY vault.tokens",
                {
                    "dek": active_dek_id,
                    "pending": pending_fingerprint_id,  # NULL while none: `<>` is then never true
                    "newest": pending_fingerprint_id or active_fingerprint_id,
                },
            ).fetchone()
        assert row is not None
        return {"reencrypt": row[0], "reindex": row[1], "compact": row[2]}
