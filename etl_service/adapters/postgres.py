"""user_logins and etl_quarantine in PostgreSQL, loaded in one transaction per batch.

Before a batch is tokenized, `loaded_before` reads which of its event ids user_logins holds (the ETL
may read event_id, 0006; one indexed look-up) and, only if any, compares those events through
public.user_logins_reused_event_ids: replays and reused event ids never reach the vault (attack 34, E1).
The load below stays the backstop for an event another consumer loads meanwhile.

Binary COPY straight into user_logins; when an event of the batch is already loaded (a
redelivery), one INSERT ... SELECT FROM unnest(typed arrays) ... ON CONFLICT DO NOTHING instead
(no temporary table: the ETL's login has no TEMPORARY since migration 0051, review 34 R34-1). The
rows that skipped are then checked by public.user_logins_reused_event_ids (migration 0021): a
row whose event_id is loaded for a different event is quarantined as `event_id_reused`, not
counted as a replay.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from etl_service.adapters.pool_waits import pooled_connection
from etl_service.adapters.postgres_refusals import REFUSED_STATES, names_tls_file, startup_refusal, tls_refusal
from etl_service.domain.messages import EventKey, QuarantineRecord, UserLoginRow, event_id_reused
from etl_service.domain.row_manifest import RowManifest
from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.ports import LoadedBefore, ReusedEventId, WriteResult
from tokenvault_common.database_dsn import Conninfo, DsnFileError, conninfo_now

_COLUMNS = (*UserLoginRow._fields, "row_manifest")  # rows are written as they are, in this order, with their list
_COLUMN_LIST = ", ".join(_COLUMNS)
_TYPES = ("text", "text", "text", "text", "text", "int4", "date", "text", "text", "text", "timestamptz", "uuid")
# The redelivery path: the batch as one array per column, of COPY's types (_TYPES), sent binary as COPY's rows are
# (text arrays: 28 ms against 19 ms a 1,000-row redelivery; the temporary staging table this replaced, 0051: 17.5
# ms); the table's own varchar limits and CHECKs apply on insert, as they did through the staging table.
_MERGE = f"""
INSERT INTO public.user_logins ({_COLUMN_LIST})
SELECT * FROM unnest({", ".join(f"%b::{t}[]" for t in _TYPES)})
ON CONFLICT (event_id) DO NOTHING
RETURNING sqs_message_id
"""
# Which skipped rows differ from the loaded row in a column that holds no token. The ETL reads
# no such column itself: the function runs as the table's owner and answers positions only.
_REUSED = """
SELECT item, loaded_message_id FROM public.user_logins_reused_event_ids(
    %s::text[], %s::text[], %s::text[], %s::text[], %s::int4[], %s::text[], %s::date[]
)
"""
_LOADED = "SELECT event_id FROM public.user_logins WHERE event_id = ANY(%b::text[])"
"""Which of a batch's event ids are loaded: the unique index on event_id, a column the ETL may read (0006)."""
_STATEMENT_ERRORS = (
    psycopg.OperationalError,
    PoolTimeout,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.ReadOnlySqlTransaction,
)
"""What `write` and `loaded_before` report through database_error (DependencyDown or Misconfigured)."""
POOL_WAIT_SECONDS = 10.0
"""How long a load or a replay check waits for a pooled connection (less once the ETL stops: pool_waits.py)."""
READ_ONLY = "Postgres unavailable: it accepts no writes (read-only: a standby, or default_transaction_read_only on)"
"""A session that may not write (SQLSTATE 25006, or the probe's `transaction_read_only`): an outage, not a bug of
each message (chaos 49, C49-1: taken for one, every good event was dead-lettered as processing_failed)."""
FILES_RECHECK_SECONDS = 1.0
"""How long after a refusal naming the certificate or key files a check connects again before it counts (R50-6)."""
Reused = tuple[UserLoginRow, str]
"""A skipped row whose event_id is loaded for a different event, and the loaded row's message id."""
_MANIFEST = """
INSERT INTO public.user_login_manifests (manifest_id, digests, signature) VALUES (%s, %s, %s)
"""
"""The batch's signed list of row digests (migration 0068; attack 41, A41-1): in the rows' transaction."""
_QUARANTINE = """
INSERT INTO public.etl_quarantine (event_id, sqs_message_id, reason, detail, sent_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""


log = logging.getLogger(__name__)


def checked_connection(conninfo: str, stopping: threading.Event | None = None) -> psycopg.Connection:
    """A connection of the ETL's own for a check (the start check; a pool that cannot connect asked why).

    A refusal naming the DSN's certificate or key files ("certificate does not match private key file", ...) counts
    only when a second connection FILES_RECHECK_SECONDS later meets one too: a connection opened between the two
    writes of a renewal (Vault Agent rendering the certificate and the key as two templates) meets it for a moment,
    and the ETL exited 1 for a state gone a moment later (review 50, R50-6). Anything else is raised at once.
    """
    try:
        return psycopg.connect(conninfo, connect_timeout=5, application_name="tokenvault-etl-check")
    except psycopg.OperationalError as error:
        if getattr(error, "sqlstate", None) is not None or not names_tls_file(str(error)):
            raise
    log.warning(
        "Postgres: libpq refused the certificate or key files of ETL_DATABASE_DSN; connecting again in"
        " %.0f s before taking it for a misconfiguration (a renewal writing them?)",
        FILES_RECHECK_SECONDS,
    )
    (stopping or threading.Event()).wait(FILES_RECHECK_SECONDS)
    return psycopg.connect(conninfo, connect_timeout=5, application_name="tokenvault-etl-check")


class PostgresLoginStore:
    """Implements LoginStore; connects as role tokenvault_etl."""

    def __init__(
        self, pool: ConnectionPool, conninfo: Conninfo | None = None, stopping: threading.Event | None = None
    ) -> None:
        """`conninfo`: what the pool connects with (a DSN file read again), to ask a refused login why (C49-5).

        `stopping`: the consumer's stop event (bootstrap shares it): once set, a wait for a pooled connection ends
        within 1 s and no login check is made - the batch is settled by the stop (etl51: the waits of a last receive
        took a SIGTERM's ETL to the end of its grace).
        """
        self._pool = pool
        self._conninfo = conninfo
        self._stopping = stopping if stopping is not None else threading.Event()

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: RowManifest | None = None
    ) -> WriteResult:
        """Load rows, their signed list (`manifest`, each row naming it) and quarantine records atomically."""
        try:
            with pooled_connection(self._pool, POOL_WAIT_SECONDS, self._stopping) as conn, conn.transaction():
                if manifest is not None and rows:
                    conn.execute(_MANIFEST, (manifest.manifest_id, manifest.digests, manifest.signature))
                listed = manifest.manifest_id if manifest is not None else None
                inserted, reused = self._load_rows(conn, rows, listed) if rows else (0, [])
                records = [*quarantined, *(event_id_reused(row, loaded) for row, loaded in reused)]
                new_quarantine = self._load_quarantine(conn, records) if records else 0
        except _STATEMENT_ERRORS as error:
            raise self._error(error) from error
        return WriteResult(inserted, new_quarantine, tuple(ReusedEventId(r.sqs_message_id, m) for r, m in reused))

    def loaded_before(self, events: Sequence[EventKey]) -> LoadedBefore:
        """Which of `events` user_logins holds, as replays or under a reused event_id; nothing written.

        One indexed read of the event ids; only when one is there (a redelivery: rare) the
        comparison of the columns without tokens, as `write` compares the rows it skips.
        """
        try:
            with pooled_connection(self._pool, POOL_WAIT_SECONDS, self._stopping) as conn:
                loaded = {str(e) for (e,) in conn.execute(_LOADED, ([e.event_id for e in events],))}
                found = [e for e in events if e.event_id in loaded]
                reused = _reused(conn, found) if found else []
        except _STATEMENT_ERRORS as error:
            raise self._error(error) from error
        refused = {e.sqs_message_id for e, _ in reused}
        return LoadedBefore(
            frozenset(e.sqs_message_id for e in found if e.sqs_message_id not in refused),
            tuple(ReusedEventId(e.sqs_message_id, m) for e, m in reused),
        )

    def check_access(self, dsn: Conninfo) -> None:
        """At start: log in as the configured role and check what the ETL needs (Misconfigured if not).

        A direct connection, not the pool's, so a refused password is reported as such instead
        of as a pool timeout; then INSERT on both tables, SELECT of user_logins.event_id (a batch's
        replays are found before it is tokenized) and EXECUTE on the function that tells a replay
        from a reused event_id, which also proves they exist.
        """
        try:
            conninfo = conninfo_now(dsn)  # a DSN file read again, as the pool reads it
        except DsnFileError as error:
            raise Misconfigured(f"Postgres: {error}", "database") from None
        try:
            with checked_connection(conninfo, self._stopping) as conn:
                allowed = conn.execute(_PRIVILEGES).fetchone()
        except psycopg.Error as error:
            raise database_error(error) from None
        if not allowed or not all(allowed):
            raise Misconfigured(f"Postgres refused the ETL: {REFUSED_STATES['42501']}", "database")

    def ready(self) -> None:
        """Whether a pooled session may write; DependencyDown when the database does not answer or is read-only.

        A read-only session (a standby reached after a failover, default_transaction_read_only on) answers
        `SELECT 1` and refuses every load: the gate's probe must not reopen on it (C49-1).
        """
        try:
            with self._pool.connection(timeout=2) as conn:
                found = conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise self._error(error) from error
        if found is not None and found[0] == "on":
            raise DependencyDown(READ_ONLY, "database")

    def _error(self, error: Exception) -> DependencyDown | Misconfigured:
        """database_error(error); a pool that could not connect is asked why, by one connection of its own.

        psycopg_pool answers PoolTimeout whatever kept it from connecting: a password changed, or a login dropped
        or refused, while the ETL ran was taken for the database down for ever - batches postponed, the gate
        closed, no exit, a message on its last receive dead-lettered (chaos 49, C49-5). A refusal is Misconfigured.
        """
        if isinstance(error, PoolTimeout) and self._conninfo is not None and not self._stopping.is_set():
            refused = self._login_refused()
            if refused is not None:
                return refused
        return database_error(error)

    def _login_refused(self) -> Misconfigured | None:
        """Misconfigured when the server refuses the configured login (password, role, database), else None."""
        try:
            conninfo = conninfo_now(self._conninfo or "")
        except DsnFileError as error:
            return Misconfigured(f"Postgres: {error}", "database")
        try:
            with checked_connection(conninfo, self._stopping):
                return None
        except psycopg.Error as error:
            found = database_error(error)
            return found if isinstance(found, Misconfigured) else None

    @staticmethod
    def _load_rows(
        conn: psycopg.Connection, rows: Sequence[UserLoginRow], manifest_id: uuid.UUID | None = None
    ) -> tuple[int, list[Reused]]:
        """COPY straight into user_logins; if an event is already there, merge instead.

        Returns how many rows were inserted, and each skipped row whose event_id is loaded for a
        different event, with the loaded row's message id. The first load of a batch (nearly
        always) is the COPY alone. A redelivered batch, or one holding the same event twice,
        fails the direct COPY on the event key; its savepoint is rolled back and the rows go
        through one INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING (no temporary table),
        then the skipped ones are compared.
        """
        try:
            with conn.transaction():  # a savepoint inside the batch's transaction
                _copy_rows(conn, "public.user_logins", rows, manifest_id)
            return len(rows), []
        except psycopg.errors.UniqueViolation:
            pass
        columns = [[row[i] for row in rows] for i in range(len(UserLoginRow._fields))] + [[manifest_id] * len(rows)]
        with conn.cursor() as cursor:
            cursor.execute(_MERGE, columns)
            inserted = Counter(str(r[0]) for r in cursor.fetchall())
        skipped = []
        for row in rows:
            if inserted[row.sqs_message_id] > 0:
                inserted[row.sqs_message_id] -= 1
            else:
                skipped.append(row)
        return len(rows) - len(skipped), _reused(conn, skipped) if skipped else []

    @staticmethod
    def _load_quarantine(conn: psycopg.Connection, records: Sequence[QuarantineRecord]) -> int:
        columns = [
            [r.event_id for r in records],
            [r.sqs_message_id for r in records],
            [r.reason for r in records],
            [r.detail[:512] for r in records],
            [r.sent_at for r in records],
        ]
        with conn.cursor() as cursor:
            cursor.execute(_QUARANTINE, columns)
            return cursor.rowcount


_REUSED_FUNCTION = "public.user_logins_reused_event_ids(text[], text[], text[], text[], integer[], text[], date[])"
_PRIVILEGES = f"""
SELECT has_table_privilege('public.user_logins', 'INSERT'), has_table_privilege('public.etl_quarantine', 'INSERT'),
       has_table_privilege('public.user_login_manifests', 'INSERT'),
       has_column_privilege('public.user_logins', 'event_id', 'SELECT'),
       has_function_privilege('{_REUSED_FUNCTION}', 'EXECUTE')
"""


def database_error(error: Exception) -> DependencyDown | Misconfigured:
    """Misconfigured for refusals (login, TLS, privilege, missing table), DependencyDown for the rest."""
    state = getattr(error, "sqlstate", None)
    text = str(error)
    if state is None and (refused := startup_refusal(text)) is not None:
        state, said = refused
        return Misconfigured(f"Postgres refused the ETL: {said} (SQLSTATE {state})", "database")
    if state is None and (tls := tls_refusal(text)) is not None:
        return Misconfigured(f"Postgres refused the ETL: ETL_DATABASE_DSN's TLS settings: {tls}", "database")
    if state in REFUSED_STATES:
        return Misconfigured(f"Postgres refused the ETL: {REFUSED_STATES[state]} (SQLSTATE {state})", "database")
    if state == "25006":  # read_only_sql_transaction: the session may not write (C49-1)
        down = DependencyDown(READ_ONLY, "database")
        down.nothing_stored = True  # the server refused the write: no COMMIT of it can have committed
        return down
    first_line = text.strip().splitlines()[0][:200] if text.strip() else ""
    down = DependencyDown(f"Postgres unavailable: {type(error).__name__}: {first_line}", "database")
    down.nothing_stored = isinstance(error, PoolTimeout)  # no connection: nothing was sent (R49-4)
    return down


_Compared = TypeVar("_Compared", UserLoginRow, EventKey)


def _reused(conn: psycopg.Connection, skipped: Sequence[_Compared]) -> list[tuple[_Compared, str]]:
    """The rows (or events) whose event_id is loaded for a different event, each with the loaded row's message id.

    Compared in the database on the columns that hold no token (never the tokens: that would
    tell the ETL whether a stored event has a guessed value). Called only for event ids loaded.
    """
    columns = [
        [r.event_id for r in skipped],
        [r.user_id for r in skipped],
        [r.device_type for r in skipped],
        [r.locale for r in skipped],
        [r.app_version for r in skipped],
        [r.app_version_text for r in skipped],
        [r.create_date for r in skipped],
    ]
    with conn.cursor() as cursor:
        cursor.execute(_REUSED, columns)
        return [(skipped[int(item) - 1], str(loaded)) for item, loaded in cursor.fetchall()]


def _copy_rows(
    conn: psycopg.Connection, table: str, rows: Sequence[UserLoginRow], manifest_id: uuid.UUID | None
) -> None:
    with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_TYPES)
        for row in rows:
            copy.write_row((*row, manifest_id))
