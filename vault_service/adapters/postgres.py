"""PostgreSQL adapters for the vault schema: keys, tokens and the audit log.

The service connects as role `tokenvault_vault`, which may read and insert here and update
only the wrapping of data keys; it has no DELETE and no access to anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from psycopg_pool import ConnectionPool

from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash
from vault_service.service.ports import NewTokenRow, StoredKey, StoredToken

_KEY_CREATION_LOCK = 0x6B657973  # serializes first-start key creation across replicas
_AUDIT_CHAIN_LOCK = 0x61756474  # serializes appends so the chain stays linear


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
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEY_CREATION_LOCK,))
            row = conn.execute(query, (purpose,)).fetchone()
            if row is None:
                row = conn.execute(
                    "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name) VALUES (%s, %s, %s)"
                    " RETURNING id, purpose, wrapped_key, state",
                    (purpose, make_wrapped_key(), self._kek_name),
                ).fetchone()
        assert row is not None
        return StoredKey(*row)


class PostgresTokenStore:
    """Tokens in vault.tokens, unique per (type, fingerprint)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, str]:
        """Fingerprint -> token for those already issued."""
        if not fingerprints:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT fingerprint, token FROM vault.tokens WHERE token_type = %s AND fingerprint = ANY(%s)",
                (token_type, list(fingerprints)),
            ).fetchall()
        return {bytes(fp): token for fp, token in rows}

    def insert_new(self, rows: Sequence[NewTokenRow]) -> dict[bytes, str]:
        """Insert; for rows another writer inserted first, read back the winner's token."""
        if not rows:
            return {}
        columns = list(
            zip(
                *[(r.token, r.token_type, r.fingerprint, r.fingerprint_key_id, r.dek_id, r.sealed) for r in rows],
                strict=True,
            )
        )
        with self._pool.connection() as conn:
            inserted = conn.execute(
                "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::int[], %s::int[], %s::bytea[])"
                " ON CONFLICT (token_type, fingerprint) DO NOTHING RETURNING fingerprint, token",
                [list(c) for c in columns],
            ).fetchall()
            result = {bytes(fp): token for fp, token in inserted}
            lost = [r for r in rows if r.fingerprint not in result]
            for token_type in {r.token_type for r in lost}:
                fps = [r.fingerprint for r in lost if r.token_type == token_type]
                winners = conn.execute(
                    "SELECT fingerprint, token FROM vault.tokens WHERE token_type = %s AND fingerprint = ANY(%s)",
                    (token_type, fps),
                ).fetchall()
                result.update({bytes(fp): token for fp, token in winners})
        return result

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        """Rows of the given tokens that exist."""
        if not tokens:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT token, token_type, dek_id, sealed FROM vault.tokens WHERE token = ANY(%s)",
                (list(tokens),),
            ).fetchall()
        return {row[0]: StoredToken(row[0], row[1], row[2], bytes(row[3]) if row[3] else None) for row in rows}


class PostgresAuditLog:
    """vault.audit_log, appended under a lock so each row chains to the one before."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def append(self, event: AuditEvent) -> None:
        """Write one chained record and commit it."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_CHAIN_LOCK,))
            last = conn.execute("SELECT row_hash FROM vault.audit_log ORDER BY id DESC LIMIT 1").fetchone()
            prev_hash = bytes(last[0]) if last else GENESIS_HASH
            at = datetime.now(UTC)
            conn.execute(
                "INSERT INTO vault.audit_log (at, client, action, purpose, token_types, item_count, outcome,"
                " prev_hash, row_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    at,
                    event.client,
                    event.action,
                    event.purpose,
                    event.token_types,
                    event.item_count,
                    event.outcome,
                    prev_hash,
                    chain_hash(prev_hash, at, event),
                ),
            )

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
