"""PostgreSQL adapters for the vault schema: keys, tokens and the audit log.

The service connects as role `tokenvault_vault`, which may read and insert here and update
only the wrapping of data keys; it has no DELETE and no access to anything else.

The pool's connections are in autocommit mode: a single statement commits on its own (one
round trip, not BEGIN, statement, COMMIT), and work of several statements that must hold
together runs inside an explicit `conn.transaction()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from vault_service.adapters.group_commit import GroupCommitter
from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash
from vault_service.domain.errors import AuditUnavailable
from vault_service.service.ports import (
    KeyGeneration,
    NewTokenRow,
    Reindexer,
    Resealer,
    StaleKeys,
    StoredKey,
    StoredToken,
)

log = logging.getLogger(__name__)

# Key state changes take this lock exclusively; token inserts take it shared and check the
# live key generation under it, so no insert is ever written with keys rotated away meanwhile.
_KEYS_LOCK = 0x6B657973

_LIVE_GENERATION = """
SELECT max(id) FILTER (WHERE purpose = 'encryption' AND state = 'active'),
       max(id) FILTER (WHERE purpose = 'fingerprint' AND state = 'active'),
       max(id) FILTER (WHERE purpose = 'fingerprint' AND state = 'pending')
FROM vault.data_keys
"""
# One index probe per wanted fingerprint, under the current key or the pending one (during a
# fingerprint-key rotation); `next_fingerprint IS NOT NULL` lets the second half use its
# partial index, which is empty outside a rotation.
_FIND = (
    "SELECT w.fp, t.token FROM unnest(%(fps)s::bytea[]) AS w(fp)"
    " JOIN vault.tokens t ON t.token_type = %(type)s AND t.fingerprint = w.fp"
    " UNION ALL"
    " SELECT w.fp, t.token FROM unnest(%(fps)s::bytea[]) AS w(fp)"
    " JOIN vault.tokens t ON t.token_type = %(type)s AND t.next_fingerprint = w.fp"
    " AND t.next_fingerprint IS NOT NULL"
)


def _bytea_array(values: Sequence[bytes | None]) -> str:
    """A bytea[] literal.

    Passing one string instead of a list lets Postgres parse the array instead of psycopg
    dumping each element in Python (a third of the insert's CPU time).
    """
    return "{" + ",".join('"\\\\x' + v.hex() + '"' if v is not None else "NULL" for v in values) + "}"


def _text_array(values: Sequence[str]) -> str:
    """A text[] literal, every element quoted and escaped."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _int_array(values: Sequence[int]) -> str:
    """An int[] literal."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def _other_keys(conn: psycopg.Connection, purpose: str, key_id: int) -> list[int]:
    """Ids of the keys of `purpose` other than `key_id` (the job work lists use their indexes)."""
    rows = conn.execute("SELECT id FROM vault.data_keys WHERE purpose = %s AND id <> %s", (purpose, key_id))
    return [r[0] for r in rows.fetchall()]


_ROW_COLUMNS = "token, token_type, dek_id, sealed"


def _stored_token(row: tuple[str, str, int, bytes | None]) -> StoredToken:
    return StoredToken(row[0], row[1], row[2], bytes(row[3]) if row[3] is not None else None)


def _lock_batch(conn: psycopg.Connection, condition: str, key_ids: list[int], limit: int) -> list[StoredToken]:
    """Lock up to `limit` rows matching `condition` (one `%s`: key ids), skipping rows others hold."""
    query = f"SELECT {_ROW_COLUMNS} FROM vault.tokens WHERE {condition} LIMIT %s FOR UPDATE SKIP LOCKED"
    return [_stored_token(r) for r in conn.execute(query, (key_ids, limit)).fetchall()]


def _live_generation(conn: psycopg.Connection) -> KeyGeneration:
    return _generation_of(conn.execute(_LIVE_GENERATION).fetchone())


def _generation_of(row: tuple[Any, ...] | None) -> KeyGeneration:
    assert row is not None  # _LIVE_GENERATION is an aggregate: always one row
    return KeyGeneration(row[0], row[1], row[2])


_AUDIT_CHAIN_LOCK = 0x61756474
# Every append holds the chain lock for its own statement (and a writer that re-reads the tail
# holds it from the read to the insert); the unique index on prev_hash refuses a stale tail.
_APPEND_AUDIT = (
    f"WITH chain AS (SELECT pg_advisory_xact_lock({_AUDIT_CHAIN_LOCK}))"
    " INSERT INTO vault.audit_log (at, client, action, purpose, token_types, item_count, outcome, prev_hash, row_hash)"
    " SELECT u.* FROM chain, unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[],"
    " %s::text[], %s::bytea[], %s::bytea[]) AS u"
)


def _chained_columns(tail: bytes, events: Sequence[AuditEvent]) -> tuple[tuple[str, ...], bytes]:
    """Array literals of `events` chained after `tail` (in order) for _APPEND_AUDIT, and the new tail."""
    times, prev_hashes, row_hashes = [], [], []
    prev_hash = tail
    for event in events:
        at = datetime.now(UTC)
        row_hash = chain_hash(prev_hash, at, event)
        times.append(at.isoformat())
        prev_hashes.append(prev_hash)
        row_hashes.append(row_hash)
        prev_hash = row_hash
    columns = (
        _text_array(times),
        _text_array([e.client for e in events]),
        _text_array([e.action for e in events]),
        _text_array([e.purpose for e in events]),
        _text_array([e.token_types for e in events]),
        _int_array([e.item_count for e in events]),
        _text_array([e.outcome for e in events]),
        _bytea_array(prev_hashes),
        _bytea_array(row_hashes),
    )
    return columns, prev_hash


class PostgresKeyStore:
    """Wrapped data keys in vault.data_keys."""

    def __init__(self, pool: ConnectionPool, kek_name: str) -> None:
        self._pool = pool
        self._kek_name = kek_name

    def load_keys(self) -> list[StoredKey]:
        """Every key row, oldest first."""
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT id, purpose, wrapped_key, state FROM vault.data_keys ORDER BY id").fetchall()
        return [StoredKey(*row) for row in rows]

    def ensure_active_key(self, purpose: str, make_wrapped_key: Callable[[], str]) -> StoredKey:
        """The active key of `purpose`, created under a lock if none exists yet."""
        query = "SELECT id, purpose, wrapped_key, state FROM vault.data_keys WHERE purpose = %s AND state = 'active'"
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
            row = conn.execute(query, (purpose,)).fetchone()
            if row is None:
                row = conn.execute(
                    "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name) VALUES (%s, %s, %s)"
                    " RETURNING id, purpose, wrapped_key, state",
                    (purpose, make_wrapped_key(), self._kek_name),
                ).fetchone()
        assert row is not None
        return StoredKey(*row)

    def add_key(self, purpose: str, wrapped_key: str) -> StoredKey:
        """New DEK: active, the old one decrypt_only. New fingerprint key: pending."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
            if purpose == "encryption":
                conn.execute(
                    "UPDATE vault.data_keys SET state = 'decrypt_only' WHERE purpose = %s AND state = 'active'",
                    (purpose,),
                )
                state = "active"
            else:
                if conn.execute(
                    "SELECT 1 FROM vault.data_keys WHERE purpose = %s AND state = 'pending'", (purpose,)
                ).fetchone():
                    raise ValueError("a fingerprint key rotation is already under way: run the re-index to finish it")
                state = "pending"
            row = conn.execute(
                "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state) VALUES (%s, %s, %s, %s)"
                " RETURNING id, purpose, wrapped_key, state",
                (purpose, wrapped_key, self._kek_name, state),
            ).fetchone()
        assert row is not None
        return StoredKey(*row)

    def update_wrapping(self, key_id: int, wrapped_key: str) -> None:
        """Store the rewrapped form of a key."""
        with self._pool.connection() as conn:
            conn.execute("UPDATE vault.data_keys SET wrapped_key = %s WHERE id = %s", (wrapped_key, key_id))

    def promote_pending_fingerprint_key(self) -> bool:
        """Pending -> active and active -> retired, once no live row lacks the new fingerprint."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
            generation = _live_generation(conn)
            if generation.pending_fingerprint_id is None:
                return False
            left = conn.execute(
                "SELECT 1 FROM vault.tokens WHERE fingerprint IS NOT NULL AND next_fingerprint IS NULL"
                " AND fingerprint_key_id <> %s LIMIT 1",
                (generation.pending_fingerprint_id,),
            ).fetchone()
            if left:
                return False
            conn.execute(
                "UPDATE vault.data_keys SET state = 'retired', retired_at = now() WHERE id = %s",
                (generation.fingerprint_id,),
            )
            conn.execute(
                "UPDATE vault.data_keys SET state = 'active' WHERE id = %s", (generation.pending_fingerprint_id,)
            )
        return True

    def retire_unused_encryption_keys(self) -> list[int]:
        """decrypt_only DEKs that no stored value uses any more become retired."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
            rows = conn.execute(
                "UPDATE vault.data_keys k SET state = 'retired', retired_at = now()"
                " WHERE purpose = 'encryption' AND state = 'decrypt_only'"
                " AND NOT EXISTS (SELECT 1 FROM vault.tokens t WHERE t.dek_id = k.id AND t.sealed IS NOT NULL)"
                " RETURNING id"
            ).fetchall()
        return [r[0] for r in rows]


class PostgresTokenStore:
    """Tokens in vault.tokens, unique per (type, fingerprint)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, str]:
        """Fingerprint -> token for those already issued."""
        if not fingerprints:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute(_FIND, {"type": token_type, "fps": _bytea_array(fingerprints)}).fetchall()
        return {bytes(fp): token for fp, token in rows}

    def insert_new(self, rows: Sequence[NewTokenRow], generation: KeyGeneration) -> dict[bytes, str]:
        """Insert under the live key generation; read back the winner where another writer was first."""
        if not rows:
            return {}
        columns = (
            _text_array([r.token for r in rows]),
            _text_array([r.token_type for r in rows]),
            _bytea_array([r.fingerprint for r in rows]),
            _int_array([r.fingerprint_key_id for r in rows]),
            _int_array([r.dek_id for r in rows]),
            _bytea_array([r.sealed for r in rows]),
            _bytea_array([r.next_fingerprint for r in rows]),
        )
        # Pipelined: BEGIN, the lock, the generation check and the insert travel together; a
        # stale generation rolls the insert back before anything is committed.
        with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_KEYS_LOCK,))
            live = conn.execute(_LIVE_GENERATION)
            insert = conn.execute(
                "INSERT INTO vault.tokens"
                " (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed, next_fingerprint)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::int[], %s::int[], %s::bytea[],"
                " %s::bytea[]) ON CONFLICT DO NOTHING RETURNING fingerprint, token",
                columns,
            )
            if _generation_of(live.fetchone()) != generation:
                raise StaleKeys("the key generation changed")
            result = {bytes(fp): token for fp, token in insert.fetchall()}
            lost = [r for r in rows if r.fingerprint not in result]
            for token_type in {r.token_type for r in lost}:
                fps = [r.fingerprint for r in lost if r.token_type == token_type]
                winners = conn.execute(_FIND, {"type": token_type, "fps": _bytea_array(fps)}).fetchall()
                result.update({bytes(fp): token for fp, token in winners})
        return result

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        """Rows of the given tokens that exist."""
        if not tokens:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM vault.tokens WHERE token = ANY(%s::text[])", (_text_array(tokens),)
            ).fetchall()
        return {row[0]: _stored_token(row) for row in rows}

    def erase(self, tokens: Sequence[str]) -> set[str]:
        """Destroy ciphertext and fingerprints; the tokens that still had a value."""
        if not tokens:
            return set()
        with self._pool.connection() as conn:
            rows = conn.execute(
                "UPDATE vault.tokens SET sealed = NULL, fingerprint = NULL, next_fingerprint = NULL,"
                " erased_at = now() WHERE token = ANY(%s) AND sealed IS NOT NULL RETURNING token",
                (list(tokens),),
            ).fetchall()
        return {r[0] for r in rows}

    def last_erasure(self) -> object:
        """Time of the newest erasure (None when nothing was ever erased)."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT max(erased_at) FROM vault.tokens WHERE erased_at IS NOT NULL").fetchone()
        return row[0] if row else None

    def reseal_batch(self, active_dek_id: int, limit: int, reseal: Resealer) -> int:
        """Lock up to `limit` rows under other DEKs (skipping rows others hold), re-seal, update."""
        with self._pool.connection() as conn, conn.transaction():
            rows = _lock_batch(
                conn, "sealed IS NOT NULL AND dek_id = ANY(%s)", _other_keys(conn, "encryption", active_dek_id), limit
            )
            if not rows:
                return 0
            updates = reseal(rows)
            tokens, dek_ids, sealed = (list(c) for c in zip(*updates, strict=True))
            conn.execute(
                "UPDATE vault.tokens t SET dek_id = u.dek_id, sealed = u.sealed"
                " FROM unnest(%s::text[], %s::int[], %s::bytea[]) AS u(token, dek_id, sealed)"
                " WHERE t.token = u.token",
                (tokens, dek_ids, sealed),
            )
        return len(rows)

    def reindex_batch(self, pending_key_id: int, limit: int, reindex: Reindexer) -> int:
        """Lock up to `limit` live rows lacking the pending fingerprint, compute it, store it."""
        with self._pool.connection() as conn, conn.transaction():
            rows = _lock_batch(
                conn,
                "fingerprint IS NOT NULL AND next_fingerprint IS NULL AND fingerprint_key_id = ANY(%s)",
                _other_keys(conn, "fingerprint", pending_key_id),
                limit,
            )
            if not rows:
                return 0
            updates = reindex(rows)
            tokens, fingerprints = (list(c) for c in zip(*updates, strict=True))
            conn.execute(
                "UPDATE vault.tokens t SET next_fingerprint = u.fp"
                " FROM unnest(%s::text[], %s::bytea[]) AS u(token, fp) WHERE t.token = u.token",
                (tokens, fingerprints),
            )
        return len(rows)

    def compact_batch(self, active_fingerprint_id: int, limit: int) -> int:
        """Move next_fingerprint into fingerprint for up to `limit` rows re-indexed under the active key."""
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "UPDATE vault.tokens SET fingerprint = next_fingerprint, fingerprint_key_id = %(key)s,"
                " next_fingerprint = NULL WHERE token IN (SELECT token FROM vault.tokens"
                " WHERE fingerprint IS NOT NULL AND fingerprint_key_id = ANY(%(old)s) AND next_fingerprint IS NOT NULL"
                " LIMIT %(limit)s FOR UPDATE SKIP LOCKED)",
                {
                    "key": active_fingerprint_id,
                    "limit": limit,
                    "old": _other_keys(conn, "fingerprint", active_fingerprint_id),
                },
            )
            return cursor.rowcount

    def work_left(self, active_dek_id: int, active_fingerprint_id: int) -> dict[str, int]:
        """Rows to re-encrypt and rows whose fingerprint is not under the active key yet."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE sealed IS NOT NULL AND dek_id <> %s),"
                " count(*) FILTER (WHERE fingerprint IS NOT NULL AND fingerprint_key_id <> %s)"
                " FROM vault.tokens",
                (active_dek_id, active_fingerprint_id),
            ).fetchone()
        assert row is not None
        return {"reencrypt": row[0], "reindex": row[1]}


class PostgresAuditLog:
    """vault.audit_log, where each row chains to the one before by hash.

    Appends from concurrent calls are grouped (group commit): while one is being written,
    those arriving wait, then go together in one statement (one disk flush for many calls).
    Each caller returns only once its own row is committed; a failed write fails every call
    in its group.

    The log remembers the hash of the chain's tail, so an append is one statement (one round
    trip) that holds the chain lock only while it runs. A unique index on `prev_hash` lets
    only one row link to any row: an append under a stale tail (another replica or an admin
    command appended meanwhile) fails as a whole, and the log then reads the tail and appends
    under the lock, which nobody can overtake. The chain can never fork.
    """

    MAX_GROUP = 500

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._committer = GroupCommitter(self._write, self.MAX_GROUP)
        self._tail: bytes | None = None  # hash of the last row seen committed; one writer at a time

    def append(self, event: AuditEvent) -> None:
        """Write one chained record durably; raise AuditUnavailable if it could not be committed."""
        try:
            self._committer.submit(event)
        except psycopg.Error as error:
            # The database's message can quote the failing row (hashes, purpose): log its
            # class and SQLSTATE only, and give the caller a message of our own.
            log.error("audit append failed", extra={"error": type(error).__name__, "sqlstate": error.sqlstate})
            raise AuditUnavailable("the audit log cannot be written, so the call was refused; retry later") from None

    def _write(self, events: list[AuditEvent]) -> None:
        try:
            self._append_chained(events)
        except BaseException:
            self._tail = None  # unknown after a failure: read it again next time
            raise

    def _append_chained(self, events: list[AuditEvent]) -> None:
        with self._pool.connection() as conn:
            if self._tail is not None:
                columns, tail = _chained_columns(self._tail, events)
                try:
                    conn.execute(_APPEND_AUDIT, columns)  # one statement: all rows or none
                except psycopg.errors.UniqueViolation as error:
                    if error.diag.constraint_name != "audit_log_prev_hash":
                        raise
                else:
                    self._tail = tail
                    return
            # Tail unknown or stale (someone else appended): read it under the chain lock, which
            # every append takes, so nobody can append between the read and our insert. The read
            # is its own statement, after the lock: a snapshot taken before it could be stale.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_CHAIN_LOCK,))
                last = conn.execute("SELECT row_hash FROM vault.audit_log ORDER BY id DESC LIMIT 1").fetchone()
                columns, tail = _chained_columns(bytes(last[0]) if last else GENESIS_HASH, events)
                conn.execute(_APPEND_AUDIT, columns)
            self._tail = tail

    def records(self) -> list[AuditRecord]:
        """Every record in order, for verification."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, at, client, action, purpose, token_types, item_count, outcome, prev_hash, row_hash"
                " FROM vault.audit_log ORDER BY id"
            ).fetchall()
        return [
            AuditRecord(r[0], r[1], AuditEvent(r[2], r[3], r[7], r[6], r[4], r[5]), bytes(r[8]), bytes(r[9]))
            for r in rows
        ]
