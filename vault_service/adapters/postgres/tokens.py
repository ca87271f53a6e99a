"""Tokens in vault.tokens: lookup by fingerprint, insert, fetch, and what changes a value.

The paths that change a stored value (erasure here; re-sealing and re-fingerprinting in
token_rekeying.py) run as SECURITY DEFINER functions that write their own audit row (migration
0006): the serving role cannot UPDATE the table.

The pool's connections are in autocommit mode: a single statement commits on its own (one
round trip, not BEGIN, statement, COMMIT), and work of several statements that must hold
together runs inside an explicit `conn.transaction()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool

from vault_service.adapters.in_flight import InFlight
from vault_service.adapters.postgres.erase_rows import EraseRowsRead
from vault_service.adapters.postgres.errors import translated
from vault_service.adapters.postgres.keys import KEYS_LOCK, LIVE_GENERATION, generation_of
from vault_service.adapters.postgres.lock_functions import LockFunctions
from vault_service.adapters.postgres.nothing_stored import Writes, writing
from vault_service.adapters.postgres.prepared import PreparedStatement
from vault_service.adapters.postgres.sql_arrays import bytea_array, int_array, text_array
from vault_service.adapters.postgres.token_rekeying import ROW_COLUMNS, TokenRekeying
from vault_service.domain.anchoring import AppendedRows, Link, stored_as_written
from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.errors import DatabaseUnavailable, StorageError, StoredValueAltered, VaultError
from vault_service.domain.rate_limit import RateLimit
from vault_service.service.ports import (
    ErasedToken,
    FoundToken,
    Inserted,
    KeyGeneration,
    NewTokenRow,
    StaleKeys,
    StoredHits,
    StoredToken,
)


# One index probe per wanted fingerprint, under the current key or the pending one (during a
# fingerprint-key rotation). Each probe is a LATERAL subquery with LIMIT 1 (a no-op under the
# unique indexes) so that the planner cannot fold it into a join: without statistics on a
# growing table it would otherwise hash-join against every row of the type, a cost that grows
# with the vault (150 ms per 1000 values at 200k tokens, against 8 ms probing). The second
# half probes the partial index on next_fingerprint, which is empty outside a rotation: a
# one-time check on that index skips the thousand empty probes then. The check is a scalar
# subquery ordered by the index, so that the index is read rather than the table: an EXISTS
# drops its ORDER BY, and since no statistics of next_fingerprint are kept (migration
# no_statistics_of_values) the planner, taking most rows to have one, then scanned the table
# for the first - all of it outside a rotation.
def _find(columns: str) -> str:
    """The lookup by fingerprint described above: `w.fp` and the `columns` of each row found."""
    return (
        "SELECT w.fp, t.* FROM unnest(%(fps)s::bytea[]) AS w(fp)"
        f" CROSS JOIN LATERAL (SELECT {columns} FROM ONLY vault.tokens"
        " WHERE token_type = %(type)s AND fingerprint = w.fp LIMIT 1) AS t"
        " UNION ALL"
        " SELECT w.fp, t.* FROM unnest(%(fps)s::bytea[]) AS w(fp)"
        f" CROSS JOIN LATERAL (SELECT {columns} FROM ONLY vault.tokens"
        " WHERE token_type = %(type)s AND next_fingerprint = w.fp AND next_fingerprint IS NOT NULL LIMIT 1) AS t"
        " WHERE (SELECT true FROM ONLY vault.tokens n WHERE n.token_type = %(type)s AND n.next_fingerprint IS NOT NULL"
        " ORDER BY n.next_fingerprint LIMIT 1)"
    )


# Tokenize's lookup reads each found row's sealed value too: a token is handed out only once its
# row is seen to hold the value asked for (found_tokens.py); the bytes come in the same round trip.
# The insert reads back the rows of values another writer stored first the same way (checked by the caller).
# And whether the row was erased (`erased_at` set): a value found there is an erasure undone in the database
# (attack 41, A41-2), refused by found_tokens.py - one more column of the same row, no other read.
_FIND = _find("token, dek_id, sealed, erased_at IS NOT NULL AS erased")

# How many of (type, fingerprint) pairs name a stored value, or token ids were issued: one index
# probe per pair on each fingerprint column (the hash index on fingerprint; the (token_type,
# next_fingerprint) index, whose entries exist only during a fingerprint-key rotation) and one of
# the token's hash index per token id, as `fetch` does. Constant work: every probe runs whatever
# the others find - a count over one UNION ALL, never EXISTS ... OR EXISTS, which stopped at the
# first hit, so the time of a call told whether a purpose named a stored value (review 15,
# finding 2). An erased row has no fingerprints (both columns cleared), so an erased value is not
# found; a token stays issued (erased or not: it stays in `user_logins`). No guard on
# next_fingerprint as in the lookup above: one over several types cannot walk the index in order,
# and scanned the table (30 ms at 200k tokens); a probe of an empty range costs less.
_STORED_AMONG = (
    "SELECT w.fp FROM unnest(%(types)s::text[], %(fps)s::bytea[]) AS w(type, fp)"
    " CROSS JOIN LATERAL (SELECT 1 FROM ONLY vault.tokens WHERE fingerprint = w.fp AND token_type = w.type"
    " LIMIT 1) AS t"
    " UNION ALL SELECT w.fp FROM unnest(%(types)s::text[], %(fps)s::bytea[]) AS w(type, fp)"
    " CROSS JOIN LATERAL (SELECT 1 FROM ONLY vault.tokens WHERE token_type = w.type AND next_fingerprint = w.fp"
    " AND next_fingerprint IS NOT NULL LIMIT 1) AS t"
    " UNION ALL SELECT NULL::bytea FROM unnest(%(tokens)s::text[]) AS w(token)"
    " CROSS JOIN LATERAL (SELECT 1 FROM ONLY vault.tokens WHERE token = w.token LIMIT 1) AS t"
)
"""Each (type, fingerprint) pair with a value stored under it (current or pending fingerprint), and a
NULL per token issued: one UNION ALL of every probe, so the work is the same hit or miss (review 15,
finding 2: `EXISTS ... OR EXISTS` stopped at the first hit)."""

_INSERT = (
    "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed, next_fingerprint)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::int[], %s::int[], %s::bytea[], %s::bytea[])"
)

log = logging.getLogger(__name__)


_LARGEST_BURST = 2**31 - 1
"""vault.take_call_budget counts in integer: a larger burst (a policy meaning "unlimited") is
sent as this, not as a bigint that would match no function."""

IN_FLIGHT_WAIT_SECONDS = 30.0
"""How long a call waits for another call of this process inserting the same new values; after
that it goes on with ON CONFLICT, which waits in the database if that insert is still open (INSERT_WAIT at most)."""
# One probe of the token's hash index per token (migration 0011), as the lookup does: a plain
# `token = ANY($1)` becomes a bitmap scan whose recheck compares each row with the whole array.
# With whether the row was erased (`erased_at` set, StoredToken.erased): Detokenize never reveals a value
# found in an erased row (an erasure the database owner undid by writing `sealed` back; attack 41, A41-2).
_FETCH_SQL = (
    f"SELECT t.* FROM unnest($1::text[]) AS w(token)"
    f" CROSS JOIN LATERAL (SELECT {ROW_COLUMNS}, erased_at IS NOT NULL AS erased FROM ONLY vault.tokens"
    " WHERE token = w.token LIMIT 1) AS t"
)
_FETCH = PreparedStatement("fetch_tokens", _FETCH_SQL, binary_rows=True)
# Detokenize's fetch, with the audit log's newest id its snapshot sees (one statement, one snapshot): an erase row
# and its erasure commit together and the chain's lock numbers rows in commit order, so the fetch saw an erasure if
# and only if that id is at or past the erase row's. The reveal's audit row says it (attack 43, A43-1).
_FETCH_SEEING_SQL = _FETCH_SQL.replace("SELECT t.*", "SELECT t.*, (SELECT max(id) FROM ONLY vault.audit_log)", 1)
_FETCH_SEEING = PreparedStatement("fetch_tokens_seeing", _FETCH_SEEING_SQL, binary_rows=True)
# The erasure mark every replica reads each key-check interval: one row, bumped inside each
# erasing transaction (migration 0014), never a read of vault.tokens.
ERASURE_COUNT_SQL = "SELECT erasures FROM ONLY vault.erasure_count"


_new_stored_token = cast(Callable[[type[StoredToken], tuple[object, ...]], StoredToken], tuple.__new__)


RETIRED_KEY_REFUSAL = "tokens_under_live_keys"
"""The constraint name migration 0036's trigger gives its refusal of a row under a retired data key."""


@contextlib.contextmanager
def _retired_key_is_stale() -> Iterator[None]:
    """Migration 0036's refusal of a row under a retired key as StaleKeys: our key ring is older than the database's.

    The vault writes only under its generation's keys; one of them retired means the generation is stale (the
    insert's own generation check, pipelined after it, never got to say so). The caller reloads its keys and retries.
    """
    try:
        yield
    except psycopg.errors.CheckViolation as error:
        if error.diag.constraint_name != RETIRED_KEY_REFUSAL:
            raise
        raise StaleKeys("a key of this generation is retired (migration 0036 refused the insert)") from None


KEYS_LOCK_WAIT = "2s"
"""How long a token insert waits for the key-generation lock (attack 27, F3): as long as an append waits for the
audit chain's (migration 0035). The vault's key jobs hold it exclusively for a few statements; longer is a holder the
audit upkeep ends (chain_lock.py). Set in vault.lock_key_generation_shared (migration 0045), named here for messages."""

# The key-generation lock, shared, through the owner's function (migration 0045: the serving role has no advisory
# function of its own, attack 27, F9): taken at once when free (the common case: no setting changes); else waited
# for under lock_timeout = KEYS_LOCK_WAIT, put back to the caller's setting once the lock is had, so the rest of the
# transaction keeps its own (as migration 0035's trigger does for the chain's lock).
_KEYS_LOCK_SHARED = "SELECT vault.lock_key_generation_shared()"
# The same before migration 0045, with pg_catalog's functions (a service started before its release's migrations ran).
# The CASEs fix the order (try, set, wait, put back): PostgreSQL evaluates a CASE's condition before its branch, and
# the subquery's one row (the setting before) before its select list.
_KEYS_LOCK_SHARED_BEFORE_0045 = (
    f"SELECT CASE WHEN pg_catalog.pg_try_advisory_xact_lock_shared({KEYS_LOCK}) THEN '' ELSE ("
    f" SELECT CASE WHEN pg_catalog.set_config('lock_timeout', '{KEYS_LOCK_WAIT}', true) IS NOT NULL"
    f" THEN CASE WHEN pg_catalog.pg_advisory_xact_lock_shared({KEYS_LOCK})::text = ''"
    " THEN pg_catalog.set_config('lock_timeout', w.before, true) END END"
    " FROM (SELECT pg_catalog.current_setting('lock_timeout') AS before OFFSET 0) AS w) END"
)

INSERT_WAIT = "2s"
"""How long a token insert waits for another transaction's uncommitted insert of the same value (review 33, R33-3).

The unique check of vault.tokens (migration 0011's exclusion constraints) waits for that transaction to end: the
vault's own inserts commit in moments, so a longer wait is a session holding an insert open (the serving role's
password suffices). Bounded like every other wait of the vault, so that the lock watch's rule - a session keeping a
vault session waiting 5 s is not the vault at work - holds."""

# The insert's own bound: lock_timeout = INSERT_WAIT for the insert statement alone, the caller's setting kept in a
# transaction-local setting of our own and put back right after it (the lock and generation check before, the read
# back after keep the caller's). Both travel in the insert's pipeline: no round trip; a subquery (OFFSET 0) is
# evaluated before the select list, so the setting is read before it is replaced. The key-row trigger (0037) sets
# and puts back its own wait inside.
_INSERT_WAIT_SET = (
    f"SELECT pg_catalog.set_config('lock_timeout', '{INSERT_WAIT}', true) FROM"
    " (SELECT pg_catalog.set_config('tokenvault.lock_timeout_before', pg_catalog.current_setting('lock_timeout'),"
    " true) OFFSET 0) AS w"
)
_INSERT_WAIT_PUT_BACK = (
    "SELECT pg_catalog.set_config('lock_timeout', pg_catalog.current_setting('tokenvault.lock_timeout_before'), true)"
)

KEYS_LOCK_NOT_FREE = (
    f"the key-generation lock (advisory lock {KEYS_LOCK}) that a new token's insert needs is held by another"
    f" session beyond its {KEYS_LOCK_WAIT} wait, so nothing was stored; retry later. The vault's key jobs hold it for"
    " moments, and the vault ends a session of its own role holding it for seconds (docs/threat-model.md, serving"
    " role); if this lasts, look for the holder in pg_locks (locktype advisory, objid"
    f" {KEYS_LOCK}) and pg_stat_activity"
)
"""DatabaseUnavailable's message when the insert's wait for KEYS_LOCK ran out: names the lock, no row data."""


@contextlib.contextmanager
def _keys_lock_not_free() -> Iterator[None]:
    """The insert's wait for KEYS_LOCK running out as DatabaseUnavailable naming that lock (attack 27, F3).

    Told from the other locks an insert may wait for by where it ran out: the key lock's wait is in
    vault.lock_key_generation_shared (migration 0045; before it, in the transaction's own statement: no error
    context), the others' in triggers (the audit chain's, migration 0035; the key rows', 0037), whose errors name
    their function and keep `translated`'s message.
    """
    try:
        yield
    except psycopg.errors.LockNotAvailable as error:
        context = error.diag.context or ""
        if context and "lock_key_generation_shared" not in context:
            raise
        log.error("token insert: the key-generation lock was not free", extra={"error": "LockNotAvailable"})
        raise DatabaseUnavailable(KEYS_LOCK_NOT_FREE) from None


_CONFLICTS = (psycopg.errors.ExclusionViolation, psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected)
"""What sends a plain insert through the merge path: a token or fingerprint another writer
stored first (the hash exclusion constraints of migration 0011; a unique index before it), or
two writers of the same new value at the same instant, each waiting for the other's exclusion
check (which runs after its index entry is made, so ordering the rows cannot prevent it)."""


class PostgresTokenStore(TokenRekeying, EraseRowsRead):
    """Tokens in vault.tokens, each token and each fingerprint unique (migration 0011)."""

    def __init__(self, pool: ConnectionPool, erase_rows: AppendedRows | None = None) -> None:
        self._pool = pool
        self._erase_rows = erase_rows
        """Where each erasure's audit row (id, prev and row hash, checked to be the event asked for) is remembered
        for the audit upkeep's check, as appended rows are (attack 41, A41-3; review 16, F4). None: not remembered."""
        self._in_flight = InFlight()
        self._counting = threading.Lock()  # the counters below are bumped from the server's threads
        self.races = 0
        """New values another writer issued first (found by the insert's ON CONFLICT, read back)."""
        self.merged_batches = 0
        """Plain inserts that met a unique violation and were done again with ON CONFLICT."""
        self._told_budgets_missing = False
        self._lock_functions = LockFunctions()

    @translated
    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, FoundToken]:
        """Fingerprint -> its row (fingerprint, token, data key id, sealed value) for those already issued."""
        if not fingerprints:
            return {}
        with self._pool.connection() as conn:
            # Binary results: bytea arrives as bytes (no hex to decode); the rows make the dict in C.
            rows = conn.execute(_FIND, {"type": token_type, "fps": bytea_array(fingerprints)}, binary=True)
            found = rows.fetchall()
        return dict(zip(map(itemgetter(0), found), cast(list[FoundToken], found), strict=True))

    @translated
    def stored_among(
        self, types: Sequence[str], fingerprints: Sequence[bytes], tokens: Sequence[str] = ()
    ) -> StoredHits:
        """Which (type, fingerprint) pairs have a value stored, and whether a token was issued (`_STORED_AMONG`).

        One query, of the same work whether or not anything is found.
        """
        if not fingerprints and not tokens:
            return StoredHits(frozenset(), False)
        wanted = {"types": text_array(types), "fps": bytea_array(fingerprints), "tokens": text_array(tokens)}
        with self._pool.connection() as conn:
            found = [fp for (fp,) in conn.execute(_STORED_AMONG, wanted).fetchall()]
        return StoredHits(frozenset(bytes(fp) for fp in found if fp is not None), None in found)

    def insert_new(self, rows: Sequence[NewTokenRow], generation: KeyGeneration) -> Inserted:
        """`_insert_new`; its VaultError says whether it stored nothing (`VaultError.stored_nothing`, `writing`).

        The same failure (the key-generation lock not free, the database refusing) tells a Tokenize whose
        transactions all ended before their COMMIT or were refused from one whose COMMIT may have gone through.
        """
        writes = Writes()
        try:
            return self._insert_new(rows, generation, writes)
        except (VaultError, StaleKeys) as error:
            error.stored_nothing = not writes.may_have_stored
            raise

    @translated
    def _insert_new(self, rows: Sequence[NewTokenRow], generation: KeyGeneration, writes: Writes) -> Inserted:
        """Insert under the live key generation; read back the winner's row where another writer was first.

        Concurrent writers issuing the same new value are common (the ETL's workers see the
        same device or address in batches milliseconds apart). Within this process they do not
        race: a value another call is inserting is left to it (`InFlight`), and read back once
        that call is done. What this call claimed goes in as a plain INSERT: `ON CONFLICT`
        would make Postgres probe every unique index once more per row before inserting it (a
        third of the statement's CPU); only a unique violation (another process, or a value
        committed since our lookup) sends the batch through `ON CONFLICT DO NOTHING` instead.
        Values another writer issued first are counted in `races`.
        """
        if not rows:
            return Inserted({}, {})
        done = threading.Event()
        claim = self._in_flight.claim((r.fingerprint for r in rows), done)
        try:
            with _retired_key_is_stale():
                mine = [r for r in rows if r.fingerprint in claim.mine]
                result = self._insert_or_merge(mine, generation, writes) if mine else Inserted({}, {})
        finally:
            self._in_flight.release(claim, done)
        theirs = [r for r in rows if r.fingerprint not in claim.mine]
        if theirs:
            deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS  # one wait for all, however many writers
            for writer in claim.others:
                writer.wait(max(0.0, deadline - time.monotonic()))
            with _retired_key_is_stale():
                merged = self._merge(theirs, generation, writes)
            result.ours.update(merged.ours)
            result.theirs.update(merged.theirs)
        return result

    def _insert_or_merge(self, rows: Sequence[NewTokenRow], generation: KeyGeneration, writes: Writes) -> Inserted:
        try:
            with (
                _keys_lock_not_free(),
                self._lock_functions.switched_when_migrated(),
                writing(writes),
                self._pool.connection() as conn,
                conn.pipeline(),
                conn.transaction(),
            ):
                inserted = self._insert(conn, rows, generation, "", self._keys_lock_statement(conn))
                writes.committing = True  # COMMIT at the block's end (the insert's own errors may surface after it)
        except _CONFLICTS:
            return self._merge(rows, generation, writes, merged=True)
        if inserted.rowcount != len(rows):
            # Not every row went in, with no error: something in the database (a trigger or a
            # rule) dropped rows. Never hand out a token whose value is not stored: read back.
            log.error(
                "a token insert stored fewer rows than sent", extra={"sent": len(rows), "stored": inserted.rowcount}
            )
            return self._merge(rows, generation, writes, merged=True)
        # A plain INSERT stores every row or fails: no RETURNING to read back (0.3 µs a row).
        return Inserted(dict(zip([r.fingerprint for r in rows], [r.token for r in rows], strict=True)), {})

    def _merge(
        self, rows: Sequence[NewTokenRow], generation: KeyGeneration, writes: Writes, merged: bool = False
    ) -> Inserted:
        """Insert what nobody issued yet (ON CONFLICT DO NOTHING); read back the others' rows as the lookup does."""
        theirs: dict[bytes, FoundToken] = {}
        with (
            _keys_lock_not_free(),
            self._lock_functions.switched_when_migrated(),
            writing(writes),
            self._pool.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            tail = " ON CONFLICT DO NOTHING RETURNING fingerprint, token"
            inserted = self._insert(conn, rows, generation, tail, self._keys_lock_statement(conn))
            ours = {bytes(fp): token for fp, token in inserted.fetchall()}
            lost = [r for r in rows if r.fingerprint not in ours]
            for token_type in {r.token_type for r in lost}:
                fps = [r.fingerprint for r in lost if r.token_type == token_type]
                winners = conn.execute(_FIND, {"type": token_type, "fps": bytea_array(fps)}, binary=True).fetchall()
                theirs.update(zip(map(itemgetter(0), winners), cast(list[FoundToken], winners), strict=True))
            writes.committing = True  # COMMIT at the block's end
        with self._counting:
            self.races += len(theirs)  # the winners read back (a row dropped unstored, or erased since, has none)
            self.merged_batches += merged
        return Inserted(ours, theirs)

    def _keys_lock_statement(self, conn: psycopg.Connection) -> str:
        """How this database takes the key-generation lock shared: migration 0045's function, or before it."""
        return _KEYS_LOCK_SHARED if self._lock_functions.present(conn) else _KEYS_LOCK_SHARED_BEFORE_0045

    @staticmethod
    def _insert(
        conn: psycopg.Connection, rows: Sequence[NewTokenRow], generation: KeyGeneration, tail: str, keys_lock: str
    ) -> psycopg.Cursor[Any]:
        """The insert's cursor (`tail`: ON CONFLICT, RETURNING), in the caller's transaction, under `generation` only.

        Pipelined: the lock, the generation check and the insert (its wait bounded to INSERT_WAIT: a value
        another transaction inserted and has not committed fails it with lock_not_available, which the
        caller's `translated` answers as DatabaseUnavailable naming that wait) travel together; a stale
        generation raises StaleKeys and the caller's transaction rolls the insert back. Rows go
        in in fingerprint order: two writers (replicas) with overlapping batches then wait for
        each other in one order, not each for the other (a deadlock, 1 s before PostgreSQL
        breaks it; measured at 1-2 s stalls in review with the batches in opposite orders).
        """
        rows = sorted(rows, key=attrgetter("fingerprint"))
        columns = (
            text_array([r.token for r in rows]),
            text_array([r.token_type for r in rows]),
            bytea_array([r.fingerprint for r in rows]),
            int_array([r.fingerprint_key_id for r in rows]),
            int_array([r.dek_id for r in rows]),
            bytea_array([r.sealed for r in rows]),
            bytea_array([r.next_fingerprint for r in rows]),
        )
        conn.execute(keys_lock)  # waited for KEYS_LOCK_WAIT at most (attack 27, F3)
        live = conn.execute(LIVE_GENERATION)
        conn.execute(_INSERT_WAIT_SET)  # a wait for another's uncommitted insert of a value: INSERT_WAIT at most
        inserted = conn.execute(_INSERT + tail, columns)
        conn.execute(_INSERT_WAIT_PUT_BACK)
        if generation_of(live.fetchone()) != generation:
            raise StaleKeys("the key generation changed")
        return inserted

    @translated
    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        """Rows of the given tokens that exist.

        A prepared statement run by libpq (see prepared.py), read in binary (bytea arrives as
        stored, no hex to decode) and made into StoredTokens in C: Detokenize runs this per call.
        """
        if not tokens:
            return {}
        with self._pool.connection() as conn:
            rows = _FETCH.rows(conn, (text_array(tokens),))
        return dict(zip(map(itemgetter(0), rows), map(_new_stored_token, repeat(StoredToken), rows), strict=True))

    @translated
    def fetch_seeing(self, tokens: Sequence[str]) -> tuple[dict[str, StoredToken], int | None]:
        """`fetch`'s rows and the audit log's newest id the same snapshot saw (None: no row found, or no log).

        Detokenize's fetch (attack 43, A43-1): its audit row names that id, so `audit verify` tells a reveal whose
        fetch preceded an erasure (legit, its row may land after the erase row) from one after it (an undo).
        """
        if not tokens:
            return {}, None
        with self._pool.connection() as conn:
            rows = _FETCH_SEEING.rows(conn, (text_array(tokens),))
        if not rows:
            return {}, None
        head = rows[0][-1]
        found = {row[0]: _new_stored_token(StoredToken, row[:-1]) for row in rows}
        return found, None if head is None else int(head)

    def erase(self, tokens: Sequence[str], event: AuditEvent) -> set[str]:
        """Destroy ciphertext and fingerprints; the tokens that still had a value.

        `event`'s audit row is written by the same function, in the same transaction, with the
        keyed hashes (`event.revealed`, one per token, in order) of the tokens it erased. A VaultError
        it ends with says whether nothing was erased (`erased_nothing`): its transaction ended before its
        COMMIT, or the server answered a statement with an ERROR - the vault then gives the erasure's
        budget back (chaos 50, V50-4).
        """
        writes = Writes()
        try:
            return self._erase(tokens, event, writes)
        except VaultError as error:
            error.erased_nothing = not writes.may_have_stored
            raise

    @translated
    def _erase(self, tokens: Sequence[str], event: AuditEvent, writes: Writes) -> set[str]:
        """`erase`, its transaction's end told to `writes` (nothing_stored.py)."""
        if not tokens:
            return set()
        if len(event.revealed) != len(tokens):
            raise ValueError(f"an erasure needs one keyed hash per token: {len(event.revealed)} for {len(tokens)}")
        with writing(writes), self._pool.connection() as conn:
            try:
                rows, link = _erase_tokens(conn, tokens, event, writes)
            except ErasureRowNotAsked:
                log.error(
                    "an erasure's audit row, read back in its transaction, is not the event the vault asked for"
                    " (another case, client, serial, outcome or tokens): nothing was erased (rolled back);"
                    " vault.erase_tokens or vault.audit_log may have been altered in the database. Report it to"
                    " the security team"
                )
                raise
            except ErasureNotDone as refused:
                log.error(
                    "an erasure's read-back found values vault.erase_tokens said it erased still stored: nothing was"
                    " erased (rolled back with its audit row); vault.erase_tokens or vault.tokens may have been"
                    " altered in the database. Report it to the security team",
                    extra={"items": refused.items},
                )
                raise
            except psycopg.errors.ObjectNotInPrerequisiteState:
                log.error(
                    "erasure refused by the database: PostgreSQL statistics may keep values of the columns an"
                    " erasure clears (a statistics target set back, or extended statistics); the database log"
                    " names them, migration no_statistics_of_values says how to remove them"
                )
                raise
        if link is not None and self._erase_rows is not None:
            self._erase_rows.remember([link])  # the upkeep checks the chain it signs holds this row, as written
        return {r[0] for r in rows}

    @translated
    def erased_tokens(self) -> list[ErasedToken]:
        """Every erased token, its type and erasure time (the partial index of migration 0010: erased rows only).

        For `audit verify`'s reconciliation with the erase rows; erased tokens are few, and a
        token is not personal data by itself (its value is gone).
        """
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT token, token_type, erased_at FROM ONLY vault.tokens WHERE erased_at IS NOT NULL"
                " ORDER BY erased_at"
            ).fetchall()
        return [ErasedToken(*row) for row in rows]

    @translated
    def give_back_budget(self, client: str, kind: str, count: int, limit: RateLimit) -> bool:
        """Put `count` items back in the client's erase bucket (0074; chaos 50, V50-4): whether it could.

        Only the erase kind is given back (an erasure that erased nothing); False for another kind, or while
        0074 is not applied (the budget then stays spent, as before). Its wait for the budget row is bounded as
        take_call_budget's is (0038, attack 27 F8): a session of the serving role holding the row kept the give-back,
        its vault worker and pool connection waiting until the upkeep's watch ended it (review 51, R51-3). So is its
        wait for a pooled connection (GIVE_BACK_POOL_WAIT_SECONDS): an erasure that failed with the database gone
        waited the pool's 10 s again before it answered (R51-4).
        """
        if kind != "erase":
            return False
        with self._pool.connection(timeout=GIVE_BACK_POOL_WAIT_SECONDS) as conn:
            try:
                with conn.transaction():
                    conn.execute(_BUDGET_ROW_WAIT)
                    conn.execute(
                        "SELECT vault.give_back_erase_budget(%s, %s, %s)",
                        (client, count, min(limit.burst, _LARGEST_BURST)),
                    )
            except psycopg.errors.UndefinedFunction:
                return False
        return True

    @translated
    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        """Take `need` to `want` items from the client's `kind` row of vault.call_budget (0019), under its lock.

        One row per (client, kind) on the database's clock, so every replica and every restart
        meters the same bucket; one statement. (items taken, 0), or (0, seconds until `need`
        would fit) with nothing taken. None while 0019 is not applied (a service started before
        the migration of its release ran): the limits then hold per process, as before 0019, and
        the first such call logs an error saying so.
        """
        burst = min(limit.burst, _LARGEST_BURST)
        want = min(want, burst)
        with self._pool.connection() as conn:
            try:
                row = conn.execute(
                    "SELECT granted, wait_seconds FROM vault.take_call_budget(%s, %s, %s, %s, %s, %s)",
                    (client, kind, need, want, limit.per_second, burst),
                ).fetchone()
            except psycopg.errors.UndefinedFunction:
                conn.rollback()
                if not self._told_budgets_missing:
                    self._told_budgets_missing = True
                    log.error(
                        "rate limits kept per process: vault.take_call_budget is missing; apply the database"
                        " migrations (0019) so replicas and restarts share one budget per client"
                    )
                return None
        granted, wait = (None, None) if row is None else row
        # A wait that is not a finite number >= 0 (NaN, negative, infinite: only a replaced function answers
        # one) would become a retry-after-ms the servicer cannot write or the client misreads (review 21, R21-5).
        real_wait = wait is not None and math.isfinite(wait) and wait >= 0
        if not real_wait or granted is None or (wait == 0 and not need <= granted <= want):
            raise StorageError(f"vault.take_call_budget answered {row!r} for {need} to {want} items; is 0019 applied?")
        return int(granted), float(wait)

    @translated
    def last_erasure(self) -> object:
        """How many erasing statements have committed (vault.erasure_count, migration 0014).

        A count, one row, bumped by a trigger inside each erasing transaction: it moves when
        any erasure commits, also one that started before an erasure already seen (whose
        erased_at, its start time, would not move a max(erased_at)).
        """
        with self._pool.connection() as conn:
            row = conn.execute(ERASURE_COUNT_SQL).fetchone()
        return row[0] if row else None


# What an erasure leaves of each token it says it erased, read in its own transaction before it commits
# (attack 41, A41-3): the rows still holding a value, a fingerprint, or no erasure mark.
_NOT_ERASED = (
    "SELECT count(*) FROM unnest(%s::text[]) AS w(token) CROSS JOIN LATERAL (SELECT 1 FROM ONLY vault.tokens"
    " WHERE token = w.token AND (sealed IS NOT NULL OR fingerprint IS NOT NULL OR next_fingerprint IS NOT NULL"
    " OR erased_at IS NULL) LIMIT 1) AS t"
)


class ErasureRowNotAsked(StoredValueAltered):
    """The erase row vault.erase_tokens wrote, read back in its transaction, is not the event asked (rolled back)."""

    def __init__(self) -> None:
        super().__init__(
            "the erasure was not done: its audit row, read back, is not the one the vault asked for (another case,"
            " client or tokens), so nothing was erased (rolled back with it); the vault's database may have been"
            " altered (its erase function or audit log): retrying cannot help, report it to the security team"
        )


_NEWEST_ROW = "SELECT id, at, prev_hash, row_hash, hash_version FROM ONLY vault.audit_log ORDER BY id DESC LIMIT 1"
"""The erasure's own audit row, read in its transaction: the chain's lock, taken by the row's insert (0035), is
held until the transaction ends, so no row can follow it (vault.erase_tokens checks its row is the newest too)."""


def _erase_row_link(
    conn: psycopg.Connection, tokens: Sequence[str], event: AuditEvent, erased: Sequence[tuple[Any, ...]]
) -> tuple[int, Link]:
    """The erase row's (id, (prev_hash, row_hash)); ErasureRowNotAsked unless its hash is that of the event asked for.

    The event as vault.erase_tokens (0034) writes it: its outcome `ok: N erased, M not erased`, and the hashes
    given with the tokens it erased, each token once, in the order given (none: NULL).
    """
    done = {r[0] for r in erased}
    seen: set[str] = set()
    hashes = []
    for token, token_hash in zip(tokens, event.revealed, strict=True):
        if token in done and token not in seen:
            seen.add(token)
            hashes.append(token_hash)
    asked = dataclasses.replace(
        event, outcome=f"ok: {len(done)} erased, {event.item_count - len(done)} not erased", revealed=tuple(hashes)
    )
    row = conn.execute(_NEWEST_ROW).fetchone()
    if row is None:
        raise ErasureRowNotAsked()
    record_id, at, prev_hash, row_hash, version = row
    record = AuditRecord(int(record_id), at, asked, bytes(prev_hash or b""), bytes(row_hash or b""), int(version or 0))
    if not stored_as_written(record, asked):
        raise ErasureRowNotAsked()
    return record.record_id, (record.prev_hash, record.row_hash)


class ErasureNotDone(StoredValueAltered):
    """vault.erase_tokens returned tokens whose rows, read back in its transaction, are not erased (rolled back)."""

    def __init__(self, items: int) -> None:
        super().__init__(
            f"the erasure was not done: {items} value(s) vault.erase_tokens said it erased are still stored when"
            " read back, so nothing was erased (rolled back with its audit row); the vault's database may have been"
            " altered (its erase function or the tokens table): retrying cannot help, report it to the security team"
        )
        self.items = items


_BUDGET_ROW_WAIT = "SET LOCAL lock_timeout = '2s'"
"""A give-back's wait for its budget row: take_call_budget's own (migration 0038's SET clause)."""
GIVE_BACK_POOL_WAIT_SECONDS = 2.0
"""A give-back's wait for a pooled connection: it is best effort, after an erasure that failed (often for want of
the database), whose answer waits for it (the pool's own wait is 10 s)."""


def _erase_tokens(
    conn: psycopg.Connection, tokens: Sequence[str], event: AuditEvent, writes: Writes
) -> tuple[list[tuple[Any, ...]], tuple[int, Link] | None]:
    """vault.erase_tokens as of migration 0023 (the audit row names the tokens erased), else as before it.

    The service is rolled out before the migrations. On a database without 0023 the erasure
    goes through the older function, whose audit row cannot name the tokens; each such erasure
    (they are rare) is logged as an error so that the gap is not silent.

    Each runs in a transaction of its own that reads back, before it commits, the rows of the tokens the
    function says it erased: every one must hold no value and no fingerprint and carry its erasure mark, else
    ErasureNotDone and the transaction (erasure and audit row) is rolled back - a function the database owner
    replaced to set the mark and leave the value told the officer "erased" (attack 41, A41-3). One round trip
    more per erasure (rare). The owner can also make the read lie; then a later reveal of the value fails
    `audit verify` (a reveal after an erasure) and the vault refuses it while the row is marked erased.

    The erase row is read back too (one more round trip): its hash must be that of the event asked for
    (`_erase_row_link`), and its (id, hashes) are returned for the upkeep's anchoring check, which finds a row
    the read was shown but the chain does not hold (review 16, F4; attack 41, A41-3: a replaced function wrote
    the row under another case). The older function's row (before 0023) is not checked (its outcome differs).

    Each transaction commits as its `conn.transaction()` block ends (the pool's connections are in autocommit),
    so `writes.committing` is set as that block's last statement: a failure from there on (a COMMIT whose answer
    was lost) may have erased, and its budget stays spent (review 51, R51-1: it was set once the block had ended,
    so an erasure whose COMMIT committed and lost its answer was taken for one that erased nothing).
    """
    who = (event.item_count, event.client, event.client_serial, event.client_cert_sha256)
    why = (event.purpose, event.token_types)
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT vault.erase_tokens(%s::text[], %s::bytea[], %s, %s, %s, %s, %s, %s)",
                (text_array(tokens), bytea_array(event.revealed), *who, *why),
            ).fetchall()
            _check_erased(conn, rows)
            link = _erase_row_link(conn, tokens, event, rows)
            writes.committing = True  # COMMIT as the block ends
        return rows, link
    except psycopg.errors.UndefinedFunction:
        log.error(
            "vault.erase_tokens does not take token hashes yet (apply migration 0023): this erasure's audit row"
            " does not name the tokens erased"
        )
    with conn.transaction():
        rows = conn.execute(
            "SELECT vault.erase_tokens(%s::text[], %s, %s, %s, %s, %s, %s)", (text_array(tokens), *who, *why)
        ).fetchall()
        _check_erased(conn, rows)
        writes.committing = True  # COMMIT as the block ends
    return rows, None


def _check_erased(conn: psycopg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """ErasureNotDone unless every token among `rows` (the function's answer) reads back erased."""
    if not rows:
        return
    found = conn.execute(_NOT_ERASED, (text_array([r[0] for r in rows]),)).fetchone()
    left = int(found[0]) if found else 0
    if left:
        raise ErasureNotDone(left)
