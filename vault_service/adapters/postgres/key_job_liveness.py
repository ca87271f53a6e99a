"""Which key operations still have a live process: a transaction-level advisory lock held while each runs.

Attack 26, F5. A key operation (reencrypt, reindex, rewrap, rotate-*, retire-kek-versions: `KEY_JOB_ACTIONS`)
writes an intent row before its work and an outcome row after it. A process SIGKILLed
between the two (OOM, node loss) left the intent for good, with nothing to tell it from
a job still running. Now each operation, BEFORE its intent row, opens a database session of its
own and in it a transaction that takes `pg_advisory_xact_lock_shared(JOB_LOCK_CLASS, key)`, `key`
a hash of the row's client, serial, action and ticket (`job_key`); the transaction stays open
until the outcome row is written (`release`). The lock dies with the session: when the process
dies the kernel closes its socket and PostgreSQL ends the backend at once (node loss: the server's
TCP keepalives, set here, end it within about a minute). The hold waits at most HOLD_WAIT_SECONDS
for the lock (review 32, F3: a session holding it exclusively made a re-run hang before any row),
then refuses naming it; the hold's session turns off the idle-in-transaction and (PostgreSQL 17+)
transaction timeouts, which would end the hold of a long job (F4).

Which intent rows are interrupted (review 32, F1, F2):

- Only intent rows written under a hold, `started (held)` (INTENT_HELD). An intent row `started`
  was written by code that holds nothing (before 7bd4f63: an older replica during a rolling upgrade,
  an admin image not yet bumped): no lock tells whether it runs, so it is never listed or closed
  (closing a live one gave `started, failed: interrupted, ok`). The mark is in the row itself, so
  the rule needs no cutoff or clock: a time bound ("no activity for N minutes") would close a long
  reencrypt of an old replica, which writes nothing to the log between its intent and its outcome.
  Such a row stays as before 7bd4f63 (an intent row alone); the release notes (docs/production.md)
  say to upgrade every replica and the admin image before relying on `status`'s list.
- Intent and outcome rows are paired per client, serial, action and ticket (`_OPEN_INTENTS`): a
  closing row pairs with the intent row it names (so one is never closed twice, and a closing row
  written for a row cannot close another); every other outcome row with the latest intent row
  before it that nothing paired with yet. Sequential runs (a run killed, then its re-run: `started,
  started, ok`) pair exactly; overlapping runs of one ticket (two replicas, a retry through the load
  balancer: `s1, s2, ok, ok`) pair by count, all closed. (The previous rule, "the next row is none or
  another intent", listed a finished job of overlapping runs for ever and closed it on every key
  operation.) An open intent row is interrupted when its key's lock can be taken exclusively
  (`pg_try_advisory_xact_lock`): no live process holds it; taken, and kept while the outcome row is
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
its holder); holding it exclusively makes a job of that key refuse to start after HOLD_WAIT_SECONDS
(audited, naming the lock); ending a job's lock session (`pg_terminate_backend`, their own role's)
makes a live job look interrupted - every key operation checks its hold before its work and before
each batch, and stops with its own `failed:` outcome; its outcome row written once its hold is gone
says so (an `interrupted` row may precede it). They can append rows as the service anyway (an intent
row of their own becomes an `interrupted` one).

Sessions (review 32, F9): each running operation keeps one session for its hold; each look-up
(`interrupted`, a claim) opens one for moments. None is from the serving pool; each connects with
CONNECT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vault_service.adapters.postgres.chain_lock import PROCESS_SESSIONS
from vault_service.domain.errors import DatabaseUnavailable, StorageError
from vault_service.service.ports import (
    CLOSING_PREFIX,
    INTENT_HELD,
    INTENT_UNHELD,
    KEY_JOB_ACTIONS,
    InterruptedJob,
)

log = logging.getLogger(__name__)

JOB_LOCK_CLASS = 1953196655  # 0x746b6a6f, 'tkjo': the first key of the int4-pair advisory lock of a key job
KEEPALIVES = {"tcp_keepalives_idle": "20", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "4"}
"""The server's keepalives on the hold's session: a process on a lost node has its hold ended within ~40 s."""
HOLD_WAIT_SECONDS = 3
"""How long `hold` waits for its key's lock (held exclusively only while an interrupted row is claimed: moments).

Under the lock watch's 5 s (chain_lock.py ends a session keeping one of the vault's waiting that long): the job is
refused naming the lock, rather than the holder ended while the job waits."""
CONNECT_TIMEOUT_SECONDS = 10
"""libpq's connect_timeout of every session here (outside the pool: its own connections, review 32, F9)."""

_ACTIONS = ", ".join(f"'{action}'" for action in KEY_JOB_ACTIONS)
_INTENTS = f"'{INTENT_UNHELD}', '{INTENT_HELD}'"
_OPEN_INTENTS = f"""
WITH job_rows AS (
    SELECT id, at, action, client, coalesce(client_serial, '') AS client_serial,
           coalesce(client_cert_sha256, '') AS client_cert_sha256, coalesce(purpose, '') AS purpose, outcome,
           outcome IN ({_INTENTS}) AS intent,
           CASE WHEN starts_with(outcome, '{CLOSING_PREFIX}')
                THEN substring(outcome FROM '^{re.escape(CLOSING_PREFIX)}([0-9]{{1,18}})[^0-9]')::bigint
           END AS closes
    FROM vault.audit_log WHERE action IN ({_ACTIONS})
), unclosed AS (
    SELECT r.*, sum(CASE WHEN r.intent THEN 1 ELSE -1 END) OVER (job ROWS UNBOUNDED PRECEDING) AS depth
    FROM job_rows AS r
    WHERE r.closes IS NULL AND NOT EXISTS (
        SELECT FROM job_rows AS c
        WHERE r.intent AND c.closes = r.id AND c.action = r.action AND c.client = r.client
          AND c.client_serial = r.client_serial AND c.purpose = r.purpose
    )
    WINDOW job AS (PARTITION BY action, client, client_serial, purpose ORDER BY id)
), paired AS (
    SELECT u.*, min(depth) OVER (later ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lowest_after
    FROM unclosed AS u
    WINDOW later AS (PARTITION BY action, client, client_serial, purpose ORDER BY id DESC)
)
SELECT id, at, action, client, client_serial, client_cert_sha256, purpose FROM paired
WHERE outcome = '{INTENT_HELD}' AND (lowest_after IS NULL OR lowest_after >= depth)
ORDER BY id
"""
"""Every held intent row of a key operation that no outcome row pairs with (migration 0039's index reads them).

A closing row (`failed: interrupted, the process ended (intent row N ...`) pairs with intent row N, by its number;
every other outcome row with the latest intent before it that nothing paired with yet (a stack per client, serial,
action and ticket): intent p is open iff the running count (intents - outcomes) never drops below its count at p
afterwards. Intents without the hold mark (`started`, older code) are paired but never listed. Both windows'
frames start at the partition's first row, so each is one pass (a frame starting after the current row made the
minimum quadratic in a partition's rows: 20 ms for 10 partitions of 200 rows; the serving role can append rows).
"""


def job_key(action: str, client: str, client_serial: str, purpose: str) -> int:
    """The second key of the operation's lock: 32 bits of a hash of what its intent and outcome rows share."""
    digest = hashlib.blake2b("\0".join((action, client, client_serial, purpose)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_held_message(key: int) -> str:
    """Why a key operation did not start: its lock held exclusively by another session beyond HOLD_WAIT_SECONDS."""
    return (
        f"the key job's lock (advisory lock class {JOB_LOCK_CLASS}, key {key}) is held exclusively by another"
        f" database session beyond its {HOLD_WAIT_SECONDS} s wait, so the job did not start (no intent row was"
        " written). A vault holds it for moments while it writes an interrupted job's outcome: if this lasts, find"
        f" the holder (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = {JOB_LOCK_CLASS} AND"
        f" objid = {key & 0xFFFFFFFF} AND mode = 'ExclusiveLock'), end its session, and run the job again"
    )


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
        conn = psycopg.connect(
            self._dsn,
            options=self._options,
            autocommit=True,
            application_name="tokenvault-key-job",
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
        try:
            PROCESS_SESSIONS.note(conn)  # this process's: the lock watch never ends it (chain_lock.py)
        except BaseException:
            conn.close()
            raise
        return conn

    def hold(self, action: str, client: str, client_serial: str, purpose: str) -> None:
        """Take the operation's lock (shared: two replicas may run the same one) in a transaction kept open.

        DatabaseUnavailable naming the lock when it is held exclusively beyond HOLD_WAIT_SECONDS (an observer
        claims it for moments; longer is a session of someone else's: review 32, F3).
        """
        key = job_key(action, client, client_serial, purpose)
        conn = self._connect()
        try:
            for name, value in {**KEEPALIVES, "idle_in_transaction_session_timeout": "0"}.items():
                conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
            # PostgreSQL 17's transaction_timeout would end the hold of a job lasting longer (review 32, F4).
            conn.execute(
                "SELECT pg_catalog.set_config(name, '0', false) FROM pg_catalog.pg_settings"
                " WHERE name OPERATOR(pg_catalog.=) 'transaction_timeout'"
            )
            conn.execute("BEGIN")
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{HOLD_WAIT_SECONDS}s",))
            conn.execute("SELECT pg_catalog.pg_advisory_xact_lock_shared(%s::int4, %s::int4)", (JOB_LOCK_CLASS, key))
        except psycopg.errors.LockNotAvailable:
            conn.close()
            raise DatabaseUnavailable(lock_held_message(key)) from None
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
