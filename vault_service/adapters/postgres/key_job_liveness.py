"""Which key operations still have a live process: a transaction-level advisory lock held while each runs.

Attack 26, F5. A key operation (reencrypt, reindex, rewrap, rotate-*, retire-kek-versions: `KEY_JOB_ACTIONS`)
writes an intent row before its work and an outcome row after it. A process SIGKILLed
between the two (OOM, node loss) left the intent for good, with nothing to tell it from
a job still running. Now each operation, BEFORE its intent row, opens a database session of its
own and in it a transaction that takes the advisory lock (JOB_LOCK_CLASS, key) shared, `key`
a hash of the row's client, serial, action and ticket (`job_key`); the transaction stays open
until the outcome row is written (`release`). The lock dies with the session: when the process
dies the kernel closes its socket and PostgreSQL ends the backend at once (node loss: the server's
TCP keepalives, set here, end it within about a minute). The hold waits at most HOLD_WAIT_SECONDS
for the lock (review 32, F3: a session holding it exclusively made a re-run hang before any row),
then refuses naming it; the hold's session turns off the idle-in-transaction and (PostgreSQL 17+)
transaction timeouts, which would end the hold of a long job (F4). Every session here is bounded from its first
statement (SESSION_BOUNDS: lock_timeout, statement_timeout) and reads no relation before its hold that a login
could lock (attack 31, F3: a read of pg_catalog.pg_settings, which every login could lock, hung every key job).

Which intent rows are interrupted (review 32, F1, F2):

- Only intent rows written under a hold: INTENT_HELD, or `started (held)` of older code
  (INTENT_HELD_UNNAMED). An intent row `started`
  was written by code that holds nothing (before 7bd4f63: an older replica during a rolling upgrade,
  an admin image not yet bumped): no lock tells whether it runs, so it is never listed or closed
  (closing a live one gave `started, failed: interrupted, ok`). The mark is in the row itself, so
  the rule needs no cutoff or clock: a time bound ("no activity for N minutes") would close a long
  reencrypt of an old replica, which writes nothing to the log between its intent and its outcome.
  Such a row stays as before 7bd4f63 (an intent row alone); the release notes (docs/production.md)
  say to upgrade every replica and the admin image before relying on `status`'s list.
- Intent and outcome rows are paired per client, serial, action and ticket (`_OPEN_INTENTS`) by the id
  an outcome row names (review 33, R33-5). Every outcome row a key operation writes - `ok:`, `failed:`,
  `refused:`, `unfinished:`, and a closing row - names its intent row's id (`... (intent row N)`; a closing
  row `failed: interrupted, the process ended (intent row N ...`); its intent row says so: `started (held;
  its outcome row names this row)` (INTENT_HELD), and pairs with the first outcome row of its job naming
  it, and only with that one. Rows appended between the two by someone else change nothing: an intent row
  of their own stays open (listed interrupted once its key's lock is free, and closed), the real one is
  paired; an outcome row naming no id pairs with no such intent row; one naming an id already paired, or no
  earlier intent row of its job, pairs nothing and is listed by `unpaired_outcomes` (`status` shows it as
  forged or duplicate). (The refusal of a job whose hold was refused names none: no intent row was written;
  its ticket is '', so it joins no job's rows.) Intent rows of older code - `started (held)` (7bd4f63 to
  R33-5's fix) and `started` - and their outcome rows, which name none, pair as before: each outcome row
  naming none with the latest such intent row before it that nothing paired with yet (a stack). Sequential
  runs (a run killed, then its re-run: `started, started, ok`) pair exactly; overlapping runs of one ticket
  (two replicas, a retry through the load balancer: `s1, s2, ok, ok`) pair by count, all closed. An open
  intent row is interrupted when its key's lock can be taken exclusively
  (`vault.try_claim_key_job`): no live process holds it; taken, and kept while the outcome row is
  written (`claimed`), so a second observer or a job of the same key starting meanwhile waits, and
  the row is looked at again under it (two observers append one row, not two).

The serving role has no advisory function of pg_catalog (migrations 0037, 0045): it takes this lock through the
owner's `vault.hold_key_job(key)` (shared, waiting) and `vault.try_claim_key_job(key)` (exclusive, tried), at most
4 in a transaction (attack 27, F9: the lock table cannot be filled through them). The lock is of the int4 pair
form with its own class, whose holders the chain-lock watch (chain_lock.py: class 0, bigint keys) does not look
at. Nothing of the vault's waits for it (an observer only tries it; a job's own hold waits for a claim of moments): a
session found keeping one that waits 5 s is ended like any other (review 31, R31-6), never a session
of this process (each is noted in chain_lock.PROCESS_SESSIONS).

The serving role's insiders (docs/threat-model.md, "Key jobs that died"): holding the shared lock
of an interrupted operation's key from a session of their own makes it look live (it is not
reported or closed while they hold it: nothing is changed, and the lock is visible in pg_locks with
its holder); holding it exclusively makes a job of that key refuse to start after HOLD_WAIT_SECONDS
(audited, naming the lock); ending a job's lock session (`pg_terminate_backend`, their own role's)
makes a live job look interrupted - every key operation checks its hold before its work and before
each batch, and stops with its own `failed:` outcome; its outcome row written once its hold is gone
says so (an `interrupted` row may precede it). They can append rows as the service anyway: an intent
row of their own is listed interrupted and closed (`failed: interrupted`); an outcome row of their own
naming no intent row pairs with none of this code's, one naming a paired row is listed as a duplicate; one
naming the id of a dead job's intent row before anything else does hides that job (no row of the log is
signed on its own: nothing tells the vault's outcome row from theirs).

Sessions (review 32, F9): each running operation keeps one session for its hold; the look-ups before it
(`interrupted`, the claims, `unpaired_outcomes`) run on that same session, in transactions of their own
ended before the hold's begins (a look-up inside the hold's transaction would keep its claims' locks for the
whole job, and its try-lock would not see its own hold). `status` with no job opens one for moments. None
is from the serving pool; each connects with CONNECT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tokenvault_common.database_dsn import Conninfo, DsnFileError, conninfo_now
from vault_service.adapters.postgres import lock_functions
from vault_service.adapters.postgres.chain_lock import PROCESS_SESSIONS
from vault_service.domain.errors import DatabaseUnavailable, StorageError
from vault_service.service.ports import (
    CLOSING_PREFIX,
    HOLD_LOST_NOTE,
    INTENT_HELD,
    INTENT_HELD_UNNAMED,
    INTENT_UNHELD,
    KEY_JOB_ACTIONS,
    NAMED_INTENT,
    InterruptedJob,
    UnpairedOutcome,
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
STATEMENT_SECONDS = 30
"""statement_timeout of every session here: its look-ups read the key rows of the audit log (23 ms for 3,500)."""
SESSION_BOUNDS = f"-c lock_timeout={HOLD_WAIT_SECONDS}s -c statement_timeout={STATEMENT_SECONDS}s"
"""Startup options of every session here, after session_settings.py's: bounded from its first statement on.

Attack 31, F3: the hold's first statements read pg_catalog.pg_settings with no bound, and every login could lock
that view (PUBLIC's UPDATE): every key operation hung, before any audit row. They read no relation now, and
migration 0052 revokes that UPDATE; a lock anyone takes on what a statement here reads (a superuser's, the owner's
on the audit log) makes it fail within seconds: DatabaseUnavailable, BOUND_MESSAGE."""
BOUND_MESSAGE = (
    f"the key job's database session did not get a lock within {HOLD_WAIT_SECONDS} s, or a statement within"
    f" {STATEMENT_SECONDS} s, so the job did not start (no intent row was written): another session holds a lock"
    " on what it reads (SELECT pid, usename, mode, relation::regclass FROM pg_locks WHERE NOT granted OR mode ="
    " 'AccessExclusiveLock'), or the database is overloaded; end that session, or wait, and run the job again"
)
"""DatabaseUnavailable's message when a statement of a key job's session reached SESSION_BOUNDS (names no data)."""

_ACTIONS = ", ".join(f"'{action}'" for action in KEY_JOB_ACTIONS)
_INTENTS = f"'{INTENT_UNHELD}', '{INTENT_HELD_UNNAMED}', '{INTENT_HELD}'"
_NAMED = re.escape(NAMED_INTENT.split("{", 1)[0])
_JOB_ROWS = f"""
WITH job_rows AS MATERIALIZED (
    SELECT id, at, action, client, coalesce(client_serial, '') AS client_serial,
           coalesce(client_cert_sha256, '') AS client_cert_sha256, coalesce(purpose, '') AS purpose, outcome,
           outcome IN ({_INTENTS}) AS intent, starts_with(outcome, '{CLOSING_PREFIX}') AS closing,
           CASE WHEN outcome IN ({_INTENTS}) THEN NULL
                WHEN starts_with(outcome, '{CLOSING_PREFIX}')
                THEN substring(outcome FROM '^{re.escape(CLOSING_PREFIX)}([0-9]{{1,18}})[^0-9]')::bigint
                ELSE substring(outcome FROM '{_NAMED}([0-9]{{1,18}})\\)$')::bigint
           END AS names
    FROM ONLY vault.audit_log WHERE action IN ({_ACTIONS})
), linked AS (
    SELECT n.*, bool_or(n.intent) OVER intent_row AS of_an_intent,
           min(n.id) FILTER (WHERE NOT n.intent AND n.id > n.k) OVER intent_row AS paired_by
    FROM (SELECT r.*, CASE WHEN r.intent THEN r.id ELSE r.names END AS k FROM job_rows AS r) AS n
    WINDOW intent_row AS (PARTITION BY action, client, client_serial, purpose, k)
)"""
"""The key operations' audit rows (migration 0039's index reads them), each linked with the intent row it names.

`names`: the intent row an outcome row names - a closing row's (`failed: interrupted, the process ended (intent
row N ...`) or any other's last words (`... (intent row N)`, review 33, R33-5). Rows are grouped by `k` (an
intent row's own id, the id an outcome row names) within a client, serial, action and ticket: `of_an_intent`,
the group holds that intent row (of the same job); `paired_by`, the first outcome row of the group written
after it - only that one pairs with it. Any other row naming it, or naming no earlier intent row of its job,
pairs nothing (`_UNPAIRED_OUTCOMES`): the vault writes one outcome row per intent row. One sort and window
pass over the key rows, read once (MATERIALIZED: each regular expression once a row): `_OPEN_INTENTS` 23 ms for
3,500 key rows among 200,000 (15 ms before; a join of the rows with themselves, planned as a nested loop, 180 ms).
"""
_OPEN_INTENTS = f"""{_JOB_ROWS}, unnamed AS (
    SELECT r.*, sum(CASE WHEN r.intent THEN 1 ELSE -1 END) OVER (job ROWS UNBOUNDED PRECEDING) AS depth
    FROM linked AS r
    WHERE r.names IS NULL AND r.outcome <> '{INTENT_HELD}' AND r.paired_by IS NULL
    WINDOW job AS (PARTITION BY action, client, client_serial, purpose ORDER BY id)
), stacked AS (
    SELECT u.*, min(depth) OVER (later ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lowest_after
    FROM unnamed AS u
    WINDOW later AS (PARTITION BY action, client, client_serial, purpose ORDER BY id DESC)
)
SELECT id, at, action, client, client_serial, client_cert_sha256, purpose FROM stacked
WHERE outcome = '{INTENT_HELD_UNNAMED}' AND (lowest_after IS NULL OR lowest_after >= depth)
UNION ALL
SELECT id, at, action, client, client_serial, client_cert_sha256, purpose FROM linked
WHERE outcome = '{INTENT_HELD}' AND paired_by IS NULL
ORDER BY id
"""
"""Every held intent row of a key operation that no outcome row pairs with.

An intent row `started (held; its outcome row names this row)` (INTENT_HELD) pairs only with the first outcome
row of its job naming it (`paired_by`): rows appended by someone else between the job's two rows change nothing
(review 33, R33-5: a planted intent row stays open and is listed, the real one is paired; a planted outcome row
naming none pairs with no such intent row). Rows of older code name no intent row (`started (held)`, `started`
and their outcome rows): those pair as before, each outcome row naming none with the latest intent row of older
code before it that nothing paired with yet (a stack per client, serial, action and ticket): intent p is open
iff the running count (intents - outcomes) never drops below its count at p afterwards. A row named by a closing
row is paired by it and leaves the stack. Intents without the hold mark (`started`) are paired but never listed.
Both windows' frames start at the partition's first row, so each is one pass (a frame starting after the current
row made the minimum quadratic in a partition's rows: 20 ms for 10 partitions of 200 rows; the serving role can
append rows).
"""
UNPAIRED_LISTED = 100
"""`unpaired_outcomes` lists the oldest this many (an insider could append any number)."""
_UNPAIRED_OUTCOMES = f"""{_JOB_ROWS}, looked_at AS (
    SELECT l.*, coalesce(bool_or(l.closing AND l.id = l.paired_by) OVER intent_row, false) AS closed
    FROM linked AS l
    WINDOW intent_row AS (PARTITION BY action, client, client_serial, purpose, k)
)
SELECT id, at, action, client, client_serial, purpose, names,
       CASE WHEN of_an_intent AND id > k THEN coalesce(paired_by, 0) ELSE 0 END
FROM looked_at
WHERE names IS NOT NULL AND NOT (of_an_intent AND id IS NOT DISTINCT FROM paired_by)
  AND NOT (closed AND id > k AND strpos(outcome, '{HOLD_LOST_NOTE.replace("'", "''")}') > 0)
ORDER BY id LIMIT {UNPAIRED_LISTED}
"""
"""Outcome rows naming an intent row they do not pair with: a duplicate (`paired_by`: the row that did) or a row
naming no earlier intent row of its job (`paired_by` 0). The vault writes one outcome row per intent row, but
for one: a job whose hold was lost (its session ended) and was closed meanwhile (`failed: interrupted`) writes
its own outcome after that closing row, saying so (HOLD_LOST_NOTE: review 32, F4); such a row after a closing
row is not listed. Any other is forged, or appended twice."""


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
    """The `JobLiveness` of one key job session: its holds, and the interrupted operations it finds.

    The look-ups (`interrupted`, `claimed`, `unpaired_outcomes`) run on the session the next hold will take,
    each in transactions of its own that end before that hold's transaction begins: one session per hold,
    not one more per look-up (review 32, F9). The hold's transaction itself runs nothing else (its lock must
    outlive every look-up's, and a look-up's try-lock in it would never conflict with its own hold).
    """

    def __init__(self, dsn: Conninfo, options: str) -> None:
        """`dsn`: the vault's database (a DsnFile: read again for each session); `options`: session_settings.py's."""
        self._dsn = dsn
        self._options = options
        self._held: list[psycopg.Connection] = []
        self._next: psycopg.Connection | None = None  # the next hold's session, opened by a look-up before it

    def _connect(self) -> psycopg.Connection:
        try:
            dsn = conninfo_now(self._dsn)  # a DSN file read again: the login Vault rendered last
        except DsnFileError as error:
            log.error("a key job's database session cannot be opened: %s", error)
            raise DatabaseUnavailable("the vault database is unavailable; retry later") from None
        conn = psycopg.connect(
            dsn,
            options=f"{self._options} {SESSION_BOUNDS}",
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

    @contextmanager
    def _looking(self) -> Iterator[psycopg.Connection]:
        """The next hold's session (opened if none) for a look-up; dropped if the look-up fails on it."""
        if self._next is None or self._next.closed:
            self._drop_next()
            self._next = self._connect()
        conn = self._next
        try:
            yield conn
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:  # SESSION_BOUNDS
            self._drop_next()
            log.error("a key job's look-up of the audit log ended at its bound: %s", type(error).__name__)
            raise DatabaseUnavailable(BOUND_MESSAGE) from None
        except psycopg.Error:
            self._drop_next()  # a session in doubt never becomes a hold's
            raise

    def _drop_next(self) -> None:
        conn, self._next = self._next, None
        if conn is not None:
            conn.close()

    def _hold_session(self) -> tuple[psycopg.Connection, bool]:
        """The session the look-ups before this hold used (out of any transaction), or a new one; whether reused."""
        conn, self._next = self._next, None
        if conn is not None and not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return conn, True
        if conn is not None:
            conn.close()
        return self._connect(), False

    def hold(self, action: str, client: str, client_serial: str, purpose: str) -> None:
        """Take the operation's lock (shared: two replicas may run the same one) in a transaction kept open.

        DatabaseUnavailable naming the lock when it is held exclusively beyond HOLD_WAIT_SECONDS (an observer
        claims it for moments; longer is a session of someone else's: review 32, F3).
        """
        key = job_key(action, client, client_serial, purpose)
        conn, reused = self._hold_session()
        try:
            try:
                self._begin_hold(conn, key)
            except psycopg.OperationalError:
                if not (reused and conn.broken):
                    raise
                # The look-ups' session ended meanwhile (the server, or someone, ended it): a new one for the hold.
                conn.close()
                conn = self._connect()
                self._begin_hold(conn, key)
        except psycopg.errors.LockNotAvailable:
            conn.close()
            raise DatabaseUnavailable(lock_held_message(key)) from None
        except psycopg.errors.QueryCanceled:  # SESSION_BOUNDS' statement_timeout
            conn.close()
            raise DatabaseUnavailable(BOUND_MESSAGE) from None
        except BaseException:
            conn.close()
            raise
        self._held.append(conn)

    @staticmethod
    def _begin_hold(conn: psycopg.Connection, key: int) -> None:
        """`conn` in a transaction holding `key`'s lock shared, waiting HOLD_WAIT_SECONDS at most for it."""
        for name, value in {**KEEPALIVES, "idle_in_transaction_session_timeout": "0"}.items():
            conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
        # PostgreSQL 17's transaction_timeout would end the hold of a job lasting longer (review 32, F4). No relation
        # is read (missing_ok: NULL before 17): every login could lock pg_settings and hang this (attack 31, F3).
        conn.execute(
            "SELECT pg_catalog.set_config('transaction_timeout', '0', false)"
            " WHERE pg_catalog.current_setting('transaction_timeout', true) IS NOT NULL"
        )
        conn.execute("BEGIN")
        conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{HOLD_WAIT_SECONDS}s",))
        _hold_shared(conn, key)

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
        with self._looking() as conn:
            found = []
            for job in self._open_intents(conn):
                with conn.transaction():
                    if _try_claim(conn, _key_of(job)):
                        found.append(job)
            return found

    def unpaired_outcomes(self) -> list[UnpairedOutcome]:
        """The outcome rows naming an intent row they do not pair with (forged or duplicate), oldest first."""
        with self._looking() as conn:
            return [
                UnpairedOutcome(int(r[0]), r[1], str(r[2]), str(r[3]), str(r[4]), str(r[5]), int(r[6]), int(r[7]))
                for r in conn.execute(_UNPAIRED_OUTCOMES).fetchall()
            ]

    @contextmanager
    def claimed(self, job: InterruptedJob) -> Iterator[bool]:
        """`job`'s lock held exclusively while in it; whether `job` is still open (no outcome row) and was unheld.

        The claim's transaction ends (its lock with it) on leaving, before any hold begins on this session.
        """
        with self._looking() as conn, conn.transaction():
            yield _try_claim(conn, _key_of(job)) and any(
                open_.intent_id == job.intent_id for open_ in self._open_intents(conn)
            )

    def release(self) -> None:
        """End every hold (their transactions roll back: they wrote nothing), and the look-ups' session."""
        held, self._held = self._held, []
        if self._next is not None:
            held.append(self._next)
            self._next = None
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


def _hold_shared(conn: psycopg.Connection, key: int) -> None:
    """(JOB_LOCK_CLASS, key) shared, under the transaction's lock_timeout: migration 0045's function, or before it."""
    if lock_functions.present(conn):
        conn.execute("SELECT vault.hold_key_job(%s::int4)", (key,))
    else:  # a schema before 0045 (a service started before its release's migrations ran)
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock_shared(%s::int4, %s::int4)", (JOB_LOCK_CLASS, key))


def _try_claim(conn: psycopg.Connection, key: int) -> bool:
    """(JOB_LOCK_CLASS, key) exclusively if free, for the transaction: whether it was taken."""
    if lock_functions.present(conn):
        row = conn.execute("SELECT vault.try_claim_key_job(%s::int4)", (key,)).fetchone()
    else:
        row = conn.execute(
            "SELECT pg_catalog.pg_try_advisory_xact_lock(%s::int4, %s::int4)", (JOB_LOCK_CLASS, key)
        ).fetchone()
    return bool(row and row[0])
