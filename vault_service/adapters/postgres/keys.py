"""Wrapped data keys in vault.data_keys, and the key-generation lock token writers share."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres import lock_functions
from vault_service.adapters.postgres.errors import translated
from vault_service.domain.errors import DatabaseUnavailable, KeysUnavailable
from vault_service.domain.keys import KeyPurpose, KeyState, state_of_new_key
from vault_service.service.ports import KeyGeneration, NewKey, StoredKey

log = logging.getLogger(__name__)

# Key state changes take this lock exclusively; token inserts take it shared and check the
# live key generation under it, so no insert is ever written with keys rotated away meanwhile.
# Both through the owner's functions vault.lock_key_generation(_shared) (migration 0045, which spells the key out).
KEYS_LOCK = 0x6B657973

KEY_JOB_LOCK_WAIT = "2s"
"""How long a key operation waits for KEYS_LOCK and for the data-key rows it changes (attack 27, F5): a session
holding either (the serving role may lock key rows through its column UPDATE grant) makes the job fail fast,
holding no audit chain lock, rather than wait for ever with every new token queued behind it."""

KEY_ROWS_NOT_FREE = (
    "a lock the key job needs is held by another session beyond its {wait} wait: {what}. Nothing was changed;"
    " run the job again. A session of the serving role holding it for seconds is ended by the vault's audit"
    " upkeep (docs/threat-model.md, serving role); if this lasts, look for the holder in pg_locks and"
    " pg_stat_activity"
)
"""The message of a key job's lock wait that ran out: names the lock, never row data."""


class KeyJobSessions:
    """The database sessions (backend pids) of this process's key operations while they hold KEYS_LOCK.

    The audit upkeep's lock watch ends a session of the role holding KEYS_LOCK for seconds; never one
    of these (chain_lock.py). Thread-safe: key operations and the upkeep run on different threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: Counter[int] = Counter()

    @contextlib.contextmanager
    def holding(self, conn: psycopg.Connection) -> Iterator[None]:
        """While the block runs, `conn`'s session counts as one of this process's key operations."""
        pid = conn.info.backend_pid
        with self._lock:
            self._pids[pid] += 1
        try:
            yield
        finally:
            with self._lock:
                self._pids[pid] -= 1
                if self._pids[pid] <= 0:
                    del self._pids[pid]

    def pids(self) -> frozenset[int]:
        """The backend pids of the key operations running now."""
        with self._lock:
            return frozenset(self._pids)


KEY_JOB_SESSIONS = KeyJobSessions()
"""This process's key operations holding KEYS_LOCK (one per process: every key store of the process notes here)."""

_SET_LOCK_WAIT = "SELECT pg_catalog.current_setting('lock_timeout'), pg_catalog.set_config('lock_timeout', %s, true)"
_PUT_BACK_LOCK_WAIT = "SELECT pg_catalog.set_config('lock_timeout', %s, true)"


def lock_keys_and_rows(conn: psycopg.Connection, rows_query: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
    """KEYS_LOCK exclusively, then the data-key rows `rows_query` selects FOR UPDATE (ordered by id); those rows.

    Run first in a key operation's transaction, before any statement that appends audit (whose trigger
    takes the audit chain's lock): each wait is bounded by KEY_JOB_LOCK_WAIT, so a session holding the
    lock or a row makes the job fail fast with DatabaseUnavailable naming it, holding no chain lock, and
    the upkeep never sees the job as the holder (attack 27, F5). The caller's lock_timeout is put back after.
    """
    row = conn.execute(_SET_LOCK_WAIT, (KEY_JOB_LOCK_WAIT,)).fetchone()
    assert row is not None
    what = f"the key-generation lock (advisory lock {KEYS_LOCK})"
    try:
        if lock_functions.present(conn):  # KEYS_LOCK through the owner's function (0045)
            conn.execute("SELECT vault.lock_key_generation()")
        else:  # a schema before 0045 (a service started before its release's migrations ran)
            conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (KEYS_LOCK,))
        what = "a row of vault.data_keys this job changes (SELECT ... FOR UPDATE by another session)"
        rows = conn.execute(rows_query + " ORDER BY id FOR UPDATE", args).fetchall()
    except psycopg.errors.LockNotAvailable:
        log.error("key job: a lock was not free", extra={"error": "LockNotAvailable", "lock": what})
        raise DatabaseUnavailable(KEY_ROWS_NOT_FREE.format(wait=KEY_JOB_LOCK_WAIT, what=what)) from None
    conn.execute(_PUT_BACK_LOCK_WAIT, (row[0],))
    return rows


LIVE_GENERATION = """
SELECT max(id) FILTER (WHERE purpose = 'encryption' AND state = 'active'),
       max(id) FILTER (WHERE purpose = 'fingerprint' AND state = 'active'),
       max(id) FILTER (WHERE purpose = 'fingerprint' AND state = 'pending')
FROM ONLY vault.data_keys
"""


def live_generation(conn: psycopg.Connection) -> KeyGeneration:
    """The ids of the keys writers must use now."""
    return generation_of(conn.execute(LIVE_GENERATION).fetchone())


def generation_of(row: tuple[Any, ...] | None) -> KeyGeneration:
    """A KeyGeneration from a LIVE_GENERATION row."""
    assert row is not None  # LIVE_GENERATION is an aggregate: always one row
    return KeyGeneration(row[0], row[1], row[2])


def other_keys(conn: psycopg.Connection, purpose: str, key_id: int) -> list[int]:
    """Ids of the keys of `purpose` other than `key_id` (the job work lists use their indexes)."""
    rows = conn.execute("SELECT id FROM ONLY vault.data_keys WHERE purpose = %s AND id <> %s", (purpose, key_id))
    return [r[0] for r in rows.fetchall()]


def _stored_key(row: tuple[Any, ...] | None) -> StoredKey:
    assert row is not None
    return StoredKey(row[0], KeyPurpose(row[1]), row[2], KeyState(row[3]), row[4] if len(row) > 4 else None)


# Values fingerprinted under a key that is not live: a new fingerprint key would not find them.
FINGERPRINTED_UNDER_A_DEAD_KEY = """
SELECT 1 FROM ONLY vault.tokens t
WHERE t.fingerprint IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ONLY vault.data_keys k WHERE k.id = t.fingerprint_key_id AND k.state <> 'retired')
LIMIT 1
"""

HAS_NEXT_FINGERPRINT_KEY_IDS = (
    "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'vault.tokens'::regclass"
    " AND attname = 'next_fingerprint_key_id' AND NOT attisdropped"
)


def has_next_fingerprint_key_ids(conn: psycopg.Connection) -> bool:
    """Whether migration 0028's vault.tokens.next_fingerprint_key_id is there (the service is rolled out first)."""
    return conn.execute(HAS_NEXT_FINGERPRINT_KEY_IDS).fetchone() is not None


HAS_CHECK_VALUES = (
    "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'vault.data_keys'::regclass"
    " AND attname = 'check_value' AND NOT attisdropped"
)


class PostgresKeyStore:
    """Wrapped data keys in vault.data_keys."""

    def __init__(self, pool: ConnectionPool, kek_name: str) -> None:
        self._pool = pool
        self._kek_name = kek_name
        # Whether migration 0024's column is there. The service is rolled out before its release's
        # migrations (docs/production.md, schema changes), so it is looked up until it is there (one
        # catalog query per key refresh until then): the running service then records the check
        # values of the keys made before 0024 within a key refresh of the migration.
        self._check_values = False
        self._next_fingerprint_key_ids = False  # migration 0028's column, looked up the same way

    def _has_check_values(self, conn: psycopg.Connection) -> bool:
        if not self._check_values:
            self._check_values = conn.execute(HAS_CHECK_VALUES).fetchone() is not None
        return self._check_values

    def _columns(self, conn: psycopg.Connection) -> str:
        check = "check_value" if self._has_check_values(conn) else "NULL::bytea"
        return f"id, purpose, wrapped_key, state, {check}"

    @translated
    def load_keys(self) -> list[StoredKey]:
        """Every key row, oldest first."""
        with self._pool.connection() as conn:
            rows = conn.execute(f"SELECT {self._columns(conn)} FROM ONLY vault.data_keys ORDER BY id").fetchall()
        return [_stored_key(row) for row in rows]

    def _insert(self, conn: psycopg.Connection, purpose: str, wrapped_key: str, check: bytes | None, state: str) -> Any:
        if self._has_check_values(conn):
            return conn.execute(
                "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state, check_value)"
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {self._columns(conn)}",
                (purpose, wrapped_key, self._kek_name, state, check),
            ).fetchone()
        return conn.execute(
            "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state) VALUES (%s, %s, %s, %s)"
            f" RETURNING {self._columns(conn)}",
            (purpose, wrapped_key, self._kek_name, state),
        ).fetchone()

    @translated
    def ensure_active_key(self, purpose: str, make_key: Callable[[], NewKey]) -> StoredKey:
        """The active key of `purpose`, created under a lock if none exists yet.

        A fingerprint key is not made while values are fingerprinted under a key that is not live
        (retired by someone other than the re-index): each would get a second token. KeysUnavailable.
        The key is made (a Transit call) before KEYS_LOCK is taken, never while it is held: the audit
        upkeep ends a session holding that lock for seconds (attack 27, F3); two replicas making the
        first key at once each make one, and the one that finds a key under the lock drops its own.
        """
        with self._pool.connection() as conn:
            query = f"SELECT {self._columns(conn)} FROM ONLY vault.data_keys WHERE purpose = %s AND state = 'active'"
            row = conn.execute(query, (purpose,)).fetchone()
        if row is not None:
            return _stored_key(row)
        self._refuse_a_second_fingerprint_key(purpose)
        new = make_key()
        with self._pool.connection() as conn, conn.transaction(), KEY_JOB_SESSIONS.holding(conn):
            found = lock_keys_and_rows(conn, query, (purpose,))
            if found:
                return _stored_key(found[0])
            self._refuse_a_second_fingerprint_key(purpose, conn)
            row = self._insert(conn, purpose, new.wrapped_key, new.check_value, KeyState.ACTIVE)
        return _stored_key(row)

    def _refuse_a_second_fingerprint_key(self, purpose: str, conn: psycopg.Connection | None = None) -> None:
        """KeysUnavailable for a fingerprint key while values are fingerprinted under a retired one."""
        if purpose != KeyPurpose.FINGERPRINT:
            return
        if conn is None:
            with self._pool.connection() as own:
                dead = own.execute(FINGERPRINTED_UNDER_A_DEAD_KEY).fetchone()
        else:
            dead = conn.execute(FINGERPRINTED_UNDER_A_DEAD_KEY).fetchone()
        if dead:
            raise KeysUnavailable(
                "no fingerprint key is active, yet stored values are fingerprinted under a retired one:"
                " a new fingerprint key would give each of them a second token. Not making one; the"
                " database owner must set the last active fingerprint key back to 'active'"
                " (see the data-key-update rows of the audit log)"
            )

    @translated
    def add_key(self, purpose: str, wrapped_key: str, check_value: bytes | None = None) -> StoredKey:
        """New DEK: active, the old one decrypt_only. New fingerprint key: pending.

        The old active key's row is locked first (lock_keys_and_rows), before the audited UPDATE.
        """
        state = state_of_new_key(KeyPurpose(purpose))
        with self._pool.connection() as conn, conn.transaction(), KEY_JOB_SESSIONS.holding(conn):
            changed = KeyState.ACTIVE if state is KeyState.ACTIVE else KeyState.PENDING
            locked = lock_keys_and_rows(
                conn, "SELECT id FROM ONLY vault.data_keys WHERE purpose = %s AND state = %s", (purpose, changed)
            )
            if state is KeyState.ACTIVE:
                conn.execute(
                    "UPDATE ONLY vault.data_keys SET state = %s WHERE purpose = %s AND state = %s",
                    (KeyState.DECRYPT_ONLY, purpose, KeyState.ACTIVE),
                )
            elif locked:
                raise ValueError("a fingerprint key rotation is already under way: run the re-index to finish it")
            row = self._insert(conn, purpose, wrapped_key, check_value, state)
        return _stored_key(row)

    @translated
    def update_wrapping(self, key_id: int, wrapped_key: str) -> None:
        """Store the rewrapped form of a key."""
        with self._pool.connection() as conn:
            conn.execute("UPDATE ONLY vault.data_keys SET wrapped_key = %s WHERE id = %s", (wrapped_key, key_id))

    @translated
    def record_check_values(self, check_values: Mapping[int, bytes]) -> None:
        """Record the check value of keys that have none yet (once: the database refuses a change)."""
        if not check_values:
            return
        with self._pool.connection() as conn, conn.transaction():
            if not self._has_check_values(conn):
                return  # migration 0024 not applied yet: nothing to record it in
            for key_id, check in check_values.items():
                conn.execute(
                    "UPDATE ONLY vault.data_keys SET check_value = %s WHERE id = %s AND check_value IS NULL",
                    (check, key_id),
                )

    @translated
    def promote_pending_fingerprint_key(self) -> bool:
        """Pending -> active and active -> retired, once no live row lacks the new fingerprint.

        Both key rows are locked first (lock_keys_and_rows), before the first audited UPDATE: a session
        holding one makes the promotion fail fast, never wait holding the audit chain's lock (attack 27, F5).
        """
        with self._pool.connection() as conn, conn.transaction(), KEY_JOB_SESSIONS.holding(conn):
            lock_keys_and_rows(
                conn,
                "SELECT id FROM ONLY vault.data_keys WHERE purpose = 'fingerprint' AND state IN ('active', 'pending')",
                (),
            )
            generation = live_generation(conn)
            if generation.pending_fingerprint_id is None:
                return False
            left = conn.execute(self._rows_left_to_reindex(conn), {"pending": generation.pending_fingerprint_id})
            if left.fetchone():
                return False
            conn.execute(
                "UPDATE ONLY vault.data_keys SET state = 'retired', retired_at = now() WHERE id = %s",
                (generation.fingerprint_id,),
            )
            conn.execute(
                "UPDATE ONLY vault.data_keys SET state = 'active' WHERE id = %s", (generation.pending_fingerprint_id,)
            )
        return True

    def _rows_left_to_reindex(self, conn: psycopg.Connection) -> str:
        """A live row without a next fingerprint under the pending key (`%(pending)s`), as migration 0028 counts."""
        if not self._next_fingerprint_key_ids:
            self._next_fingerprint_key_ids = has_next_fingerprint_key_ids(conn)
        if not self._next_fingerprint_key_ids:
            return (
                "SELECT 1 FROM ONLY vault.tokens WHERE fingerprint IS NOT NULL AND next_fingerprint IS NULL"
                " AND fingerprint_key_id <> %(pending)s LIMIT 1"
            )
        return (
            "SELECT 1 FROM ONLY vault.tokens WHERE fingerprint IS NOT NULL AND fingerprint_key_id <> %(pending)s"
            " AND (next_fingerprint IS NULL OR next_fingerprint_key_id IS DISTINCT FROM %(pending)s) LIMIT 1"
        )

    @translated
    def retire_unused_encryption_keys(self, key_ids: Sequence[int]) -> list[int]:
        """Those of `key_ids` that are decrypt_only DEKs no stored value uses any more become retired."""
        with self._pool.connection() as conn, conn.transaction(), KEY_JOB_SESSIONS.holding(conn):
            lock_keys_and_rows(  # the rows it may change, before its audited UPDATE (attack 27, F5)
                conn,
                "SELECT id FROM ONLY vault.data_keys"
                " WHERE purpose = 'encryption' AND state = 'decrypt_only' AND id = ANY(%s)",
                (list(key_ids),),
            )
            rows = conn.execute(
                "UPDATE ONLY vault.data_keys k SET state = 'retired', retired_at = now()"
                " WHERE purpose = 'encryption' AND state = 'decrypt_only' AND id = ANY(%s)"
                " AND NOT EXISTS (SELECT 1 FROM ONLY vault.tokens t WHERE t.dek_id = k.id AND t.sealed IS NOT NULL)"
                " RETURNING id",
                (list(key_ids),),
            ).fetchall()
        return [r[0] for r in rows]
