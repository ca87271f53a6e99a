"""Which key operations still have a live process: a transaction-level advisory lock held while each runs.

Attack 26, F5. A key operation (reencrypt, reindex, rewrap, rotate-*, retire-kek-versions: `KEY_JOB_ACTIONS`)
writes an intent row (`started`) before its work and an outcome row after it. A process SIGKILLed
between the two (OOM, node loss) left the intent `started` for good, with nothing to tell it from
a job still running. Now each operation, BEFORE its intent row, opens a database session of its
own and in it a transaction that takes `pg_advisory_xact_lock_shared(JOB_LOCK_CLASS, key)`, `key`
a hash of the row's client, serial, action and ticket (`job_key`); the transaction stays open
until the outcome row is written (`release`). The lock dies with the session: when the process
dies the kernel closes its socket and PostgreSQL ends the backend at once (node loss: the server's
TCP keepalives, set here, end it within about a minute).

An intent row with no outcome row (the next row of the same client, serial, action and ticket is
none or another intent) is interrupted when its key's lock can be taken exclusively
(`pg_try_advisory_xact_lock`): no live process holds it. Taken, and kept while the outcome row is
written (`claimed`), so a second observer or a job of the same key starting meanwhile waits, and
the row is looked at again under it (two observers append one row, not two).

The session-level advisory functions are revoked from the serving role (migration 0037); the
transaction-level forms are not, and this lock is of the int4 pair form with its own class, whose
holders the chain-lock watch (chain_lock.py: class 0, bigint keys) does not look at. Nothing of the
vault's waits for it (an observer only tries it; a job's own hold waits for a claim of moments): a
session found keeping one that waits 5 s is ended like any other (review 31, R31-6), never a session
of this process (each is noted in chain_lock.PROCESS_SESSIONS).

The serving role's insiders (docs/threat-model.md, "Key jobs that died"): holding the shared lock
of an interrupted operation's key from a session of their own makes it look live (it is not
reported or closed while they hold it: nothing is changed, and the lock is visible in pg_locks with
its holder); ending a job's lock session (`pg_terminate_backend`, their own role's) makes a live
job look interrupted - the job sees its lock gone before its next batch (`check`) and stops with
its own `failed:` outcome, so the record then holds the `interrupted` row and the job's. They can
append rows as the service anyway (an intent row of their own becomes an `interrupted` one).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vault_service.adapters.postgres.chain_lock import PROCESS_SESSIONS
from vault_service.domain.errors import StorageError
from vault_service.service.ports import KEY_JOB_ACTIONS, InterruptedJob

log = logging.getLogger(__name__)

JOB_LOCK_CLASS = 1953196655  # 0x746b6a6f, 'tkjo': the first key of the int4-pair advisory lock of a key job
KEEPALIVES = {"tcp_keepalives_idle": "20", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "4"}
"""The server's keepalives on the hold's session: a process on a lost node has its hold ended within ~40 s."""

_ACTIONS = ", ".join(f"'{action}'" for action in KEY_JOB_ACTIONS)
_OPEN_INTENTS = f"""
SELECT id, at, action, client, client_serial, client_cert_sha256, purpose FROM (
    SELECT id, at, action, client, coalesce(client_serial, '') AS client_serial,
           coalesce(client_cert_sha256, '') AS client_cert_sha256, coalesce(purpose, '') AS purpose, outcome,
           pg_catalog.lead(outcome) OVER (
               PARTITION BY action, client, coalesce(client_serial, ''), coalesce(purpose, '') ORDER BY id
           ) AS next_outcome
    FROM vault.audit_log WHERE action IN ({_ACTIONS})
) AS rows
WHERE outcome OPERATOR(pg_catalog.=) 'started'
  AND (next_outcome IS NULL OR next_outcome OPERATOR(pg_catalog.=) 'started')
ORDER BY id
"""
"""Every intent row of a key operation with no outcome row after it (migration 0039's index reads them)."""


def job_key(action: str, client: str, client_serial: str, purpose: str) -> int:
    """The second key of the operation's lock: 32 bits of a hash of what its intent and outcome rows share."""
    digest = hashlib.blake2b("\0".join((action, client, client_serial, purpose)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _key_of(job: InterruptedJob) -> int:
    return job_key(job.action, job.client, job.client_serial, job.purpose)


class PostgresJobLiveness:
    """The `JobLiveness` of one key job session: its holds, and the interrupted operations it finds."""

    def __init__(self, dsn: str, options: str) -> None:
        """`dsn`, `options`: the vault's database and its sessions' startup options (session_settings.py)."""
        self._dsn = dsn
        self._options = options
        self._held: list[psycopg.Connection] = []

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self._dsn, options=self._options, autocommit=True, application_name="tokenvault-key-job")
        try:
            PROCESS_SESSIONS.note(conn)  # this process's: the lock watch never ends it (chain_lock.py)
        except BaseException:
            conn.close()
            raise
        return conn

    def hold(self, action: str, client: str, client_serial: str, purpose: str) -> None:
        """Take the operation's lock (shared: two replicas may run the same one) in a transaction kept open."""
        conn = self._connect()
        try:
            for name, value in {**KEEPALIVES, "idle_in_transaction_session_timeout": "0"}.items():
                conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
            conn.execute("BEGIN")
            conn.execute(
                "SELECT pg_catalog.pg_advisory_xact_lock_shared(%s::int4, %s::int4)",
                (JOB_LOCK_CLASS, job_key(action, client, client_serial, purpose)),
            )
        except BaseException:
            conn.close()
            raise
        self._held.append(conn)

    def check(self) -> None:
        """StorageError when a hold's session has ended (ended by someone, or the database restarted)."""
        for conn in self._held:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                raise StorageError(
                    "the key job's hold on the database ended (its session was ended, or the database restarted):"
                    " the job stops so that it is never taken for an interrupted one while it runs;"
                    " run it again: it resumes"
                ) from None

    def interrupted(self) -> list[InterruptedJob]:
        """Every intent row with no outcome row whose lock no process holds."""
        with self._connect() as conn:
            found = []
            for job in self._open_intents(conn):
                with conn.transaction():
                    row = conn.execute(
                        "SELECT pg_catalog.pg_try_advisory_xact_lock(%s::int4, %s::int4)",
                        (JOB_LOCK_CLASS, _key_of(job)),
                    ).fetchone()
                    if row and row[0]:
                        found.append(job)
            return found

    @contextmanager
    def claimed(self, job: InterruptedJob) -> Iterator[bool]:
        """`job`'s lock held exclusively while in it; whether `job` is still open (no outcome row) and was unheld."""
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "SELECT pg_catalog.pg_try_advisory_xact_lock(%s::int4, %s::int4)", (JOB_LOCK_CLASS, _key_of(job))
            ).fetchone()
            yield bool(row and row[0]) and any(open_.intent_id == job.intent_id for open_ in self._open_intents(conn))

    def release(self) -> None:
        """End every hold (their transactions roll back: they wrote nothing)."""
        held, self._held = self._held, []
        for conn in held:
            try:
                conn.close()
            except psycopg.Error as error:  # gone already: the lock went with it
                log.warning("key job hold: closing its session failed: %s", type(error).__name__)

    @staticmethod
    def _open_intents(conn: psycopg.Connection) -> list[InterruptedJob]:
        return [
            InterruptedJob(int(r[0]), r[1], str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]))
            for r in conn.execute(_OPEN_INTENTS).fetchall()
        ]
