"""Sessions of the serving role keeping the vault's locks from it, ended: the rule as it stands.

Its history (attacks 26-28, reviews 31 and 33) and what it leaves: docs/threat-model.md.

Watched: the audit chain's lock (AUDIT_CHAIN_LOCK: every append takes it to commit), the key-generation lock
(KEYS_LOCK), any lock but a plain read's on vault.data_keys, and every lock a session of the role waits for.
Whose: every login of tokenvault_vault, seen and ended only through migration 0042's functions of the owner
(vault.role_sessions, vault.end_role_session); before 0042, or with an owner lacking pg_read_all_stats or
pg_signal_backend, this login's alone (`blind`: one warning line, tokenvault_lock_watch_blind). A session of a
non-member (the owner's, a superuser's) is reported, never ended. All seconds on the server's clock.
Each upkeep round (2 s), counted per transaction (an idle session: per session) since a round first saw it, or
since it went idle in its transaction:
1. holding a watched lock HELD_SECONDS (5 s): ended, waiting or not - but never a key operation of this process
   (KEY_JOB_SESSIONS) holding KEYS_LOCK or key rows, and a session of this process (PROCESS_SESSIONS) waiting for
   a lock has what keeps it waiting ended instead;
2. keeping a session of the role waiting for any lock HELD_SECONDS: ended;
3. keeping a key operation of this process waiting KEY_JOB_WAITED_SECONDS (1 s): ended at once (the round looks
   again every 0.25 s while one waits).
On a thread of its own every CHAIN_LOOK_SECONDS (0.25 s; `end_what_keeps_chain_appends_waiting`):
4. keeping a session of the role waiting CHAIN_WAITED_SECONDS (1 s) for the chain's lock, as holder or queued
   ahead, and not one of the vault's appends (`_did_something_first`): ended at once.
5. holding more than HOG_LOCKS (256) entries of PostgreSQL's shared lock table (attack 29, F1: nested savepoints
   that each write, one XID lock apiece, filled the table and every vault call failed): ended at once
   (`LockHogWatch`, migration 0047's vault.end_lock_hogs) - on a connection of its own, opened at start, whose
   statement reads no relation and is planned before any fill, so that it still runs while the table is full.
Never ended under 2-5: a session of this process. Never at all: one waiting for a synchronous standby (SyncRep).
Since migration 0050 (attack 30, F2: any login of the role could end other logins' appends and key work on demand)
vault.end_role_session itself refuses (false) a session under these bounds, on the server's clock: it ends one
whose transaction (outside any: session) began 5 s ago, or that keeps a member waiting whose wait began 1 s ago, or
that keeps waiting a member holding a watched lock in a transaction begun 5 s ago (vault.lock_watch_floor).
Ended only if still that session in that transaction and still holding or blocking; one log line per session,
counted. Every lock wait of the vault gives up after 2 s, so none of its sessions holds a watched lock 5 s unless
stalled (its call then fails UNAVAILABLE).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import ConnectionPool

from tokenvault_common.database_dsn import conninfo_now
from vault_service.adapters.postgres.keys import KEY_JOB_SESSIONS, KEYS_LOCK
from vault_service.adapters.postgres.lock_hogs import HOG_LOCKS as HOG_LOCKS
from vault_service.adapters.postgres.lock_hogs import LockHog as LockHog
from vault_service.adapters.postgres.lock_hogs import LockHogWatch
from vault_service.adapters.postgres.process_sessions import PROCESS_SESSIONS as PROCESS_SESSIONS
from vault_service.adapters.postgres.process_sessions import ProcessSessions as ProcessSessions

log = logging.getLogger(__name__)

AUDIT_CHAIN_LOCK = 1635083380  # 0x61756474, 'audt': the chain trigger's advisory lock
HELD_SECONDS = 5.0
"""How long a session may hold the chain's lock in one transaction before it is ended."""

KEY_JOB_WAITED_SECONDS = 1.0
"""How long a key operation of this process may be kept waiting for a lock before what keeps it waiting is ended.

Half its own wait (keys.py KEY_JOB_LOCK_WAIT, 2 s): ended then, the holders let it through before it gives up."""
CHAIN_WAITED_SECONDS = 1.0
"""How long a session of the role may wait for the audit chain's lock before what keeps it waiting is looked at.

Half the append's own wait (migration 0035, 2 s): ended then, the holders let it through before it gives up."""
CHAIN_SEEN_WAITING_SECONDS = 0.5
"""From this long a wait for the chain's lock on, each look notes every queued session's wait (a holder granted later
is then told from an append by it); nothing is ended before CHAIN_WAITED_SECONDS."""
CHAIN_LOOK_SECONDS = 0.25
"""How often the chain-wait watch looks for a session of the role waiting that long (one read of pg_locks)."""
DID_SOMETHING_FIRST_SECONDS = 0.5
"""A transaction that began this long before the chain-lock wait (or the statement) it is in did something else
first: not one of the vault's appends, each of which waits for the lock in the statement that began it."""
HELD_AN_APPEND_SECONDS = 0.2
"""A transaction seen holding the chain's lock this long is not an append (which holds it for its commit)."""
APPEND_WAIT_BOUND_SECONDS = 2.5
"""Longer than any vault statement waits for the chain's lock (2 s, migration 0035), with room for a busy server."""
BLOCKER_MEMORY_SECONDS = 60.0
"""How long the watch remembers a transaction it saw keeping a vault session waiting, once it no longer does."""

DATA_KEY_ROWS = 0
"""Not an advisory key: the watch's name for a lock on rows of vault.data_keys (FOR UPDATE/SHARE, an UPDATE)."""
ADVISORY_LOCKS = (AUDIT_CHAIN_LOCK, KEYS_LOCK)
"""The advisory locks the watch looks at: the vault's only two."""
WATCHED_LOCKS = {
    AUDIT_CHAIN_LOCK: "the audit chain's lock",
    KEYS_LOCK: "the key-generation lock",
    DATA_KEY_ROWS: "a lock on rows of vault.data_keys",
}
"""Every lock the watch looks at, by the name its log lines use."""
BLOCKED_A_VAULT_SESSION = -1
"""Not a lock: a `ChainLockHolder.lock` for a session ended for keeping a vault session waiting (any lock; `kind`)."""
LOCK_TABLE = "a share of PostgreSQL's lock table"
"""`ChainLockHolder.kind` of a session ended for holding more than HOG_LOCKS lock-table entries (LockHogWatch)."""

_SESSIONS = "vault.role_sessions()"
"""The sessions of every login of the serving role in this database, but this one (migration 0042, review 33 R33-6):
pid, backend_start, xact_start, state, wait_event_type, wait_event, state_change; the owner sees them."""
_OWN_LOGIN_SESSIONS = """(SELECT a.pid, a.backend_start, a.xact_start, a.state, a.wait_event_type, a.wait_event,
        a.state_change FROM pg_catalog.pg_stat_activity a
 WHERE a.usename OPERATOR(pg_catalog.=) SESSION_USER AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
   AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid())"""
"""The same, before migration 0042: this login's sessions only (all its own login may see and end)."""

_REACH = """
SELECT p.oid IS NOT NULL, pg_catalog.pg_has_role(p.proowner, 'pg_read_all_stats', 'USAGE'),
       pg_catalog.pg_has_role(p.proowner, 'pg_signal_backend', 'USAGE')
FROM (SELECT pg_catalog.to_regprocedure(
        'vault.end_role_session(integer, timestamp with time zone, timestamp with time zone)') AS f) x
LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) x.f
"""
"""Whether migration 0042's functions are there, and whether their owner may see and signal other logins' sessions."""

_THIS_DATABASE = (
    "(SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())"
)

_HOLDERS = """
WITH s AS (SELECT * FROM {sessions} AS x)
SELECT l.objid::pg_catalog.int8, l.pid, s.state, s.xact_start, s.backend_start, s.wait_event,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) s.state_change), s.wait_event_type
FROM pg_catalog.pg_locks l
LEFT JOIN s ON s.pid OPERATOR(pg_catalog.=) l.pid
WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
  AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objsubid OPERATOR(pg_catalog.=) 1
  AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int8[])
  AND l.database OPERATOR(pg_catalog.=) {database}
  AND l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
UNION ALL
SELECT 0, l.pid, s.state, s.xact_start, s.backend_start, s.wait_event,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) s.state_change), s.wait_event_type
FROM pg_catalog.pg_locks l
LEFT JOIN s ON s.pid OPERATOR(pg_catalog.=) l.pid
WHERE l.locktype OPERATOR(pg_catalog.=) 'relation' AND l.granted
  AND l.relation OPERATOR(pg_catalog.=) 'vault.data_keys'::pg_catalog.regclass
  AND l.database OPERATOR(pg_catalog.=) {database}
  AND l.mode OPERATOR(pg_catalog.<>) 'AccessShareLock'
  AND l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
"""
"""Every other session holding a watched lock in this database: the lock (DATA_KEY_ROWS for a row-locking or writing
lock on vault.data_keys: a plain read's AccessShareLock blocks no key job or insert), pid, state, transaction start,
session start and wait (NULL: not a session of a login of the serving role, or one the owner may not see), seconds
in its state, kind of wait ('Lock': it waits for a lock another session holds)."""

_END = "SELECT vault.end_role_session(%(pid)s, %(started)s, %(xact)s) WHERE {still}"
"""End a session of a login of the role if it is still that session in that transaction (NULL: outside any), not
waiting for a synchronous standby, still holding a watched lock or keeping a session of the role waiting (0042),
and `still` holds. No row, or NULL: it let go (or is not a member's); false: the server did not end it."""
_END_OWN_LOGIN = """
SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a
WHERE a.pid OPERATOR(pg_catalog.=) %(pid)s AND a.backend_start OPERATOR(pg_catalog.=) %(started)s
  AND a.xact_start IS NOT DISTINCT FROM %(xact)s AND a.wait_event IS DISTINCT FROM 'SyncRep' AND {still}
"""
"""The same before migration 0042 (a session of this login only: all its own login may signal)."""
_STILL_HOLDING = """EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
              WHERE l.pid OPERATOR(pg_catalog.=) %(pid)s AND l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
                AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objsubid OPERATOR(pg_catalog.=) 1
                AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) %(lock)s)"""
"""Still holding the advisory lock `lock` (an idle session's session-level form)."""
_STILL_BLOCKING = "%(pid)s OPERATOR(pg_catalog.=) ANY(pg_catalog.pg_blocking_pids(%(waiter)s))"
"""Still keeping the waiting session `waiter` waiting."""

_BLOCKERS = """
SELECT b, s.backend_start, s.xact_start, s.wait_event
FROM pg_catalog.unnest(pg_catalog.pg_blocking_pids(%s)) AS b
LEFT JOIN {sessions} s ON s.pid OPERATOR(pg_catalog.=) b
WHERE b OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() AND b OPERATOR(pg_catalog.<>) 0
"""
"""The sessions a waiting session waits for, with their session and transaction start and wait (review 31: the watch
ends those, never the one that waits)."""

_WAITERS = """
WITH s AS (SELECT * FROM {sessions} AS x)
SELECT w.pid, l.locktype, l.objid::pg_catalog.int8,
       (SELECT pg_catalog.string_agg(n.nspname OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.relname, ' or '
                                     ORDER BY c.relname)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
        WHERE CASE WHEN l.relation IS NOT NULL THEN c.oid OPERATOR(pg_catalog.=) l.relation
              WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_locks t WHERE t.pid OPERATOR(pg_catalog.=) w.pid
                             AND t.locktype OPERATOR(pg_catalog.=) 'tuple' AND t.granted)
              THEN c.oid IN (SELECT t.relation FROM pg_catalog.pg_locks t WHERE t.pid OPERATOR(pg_catalog.=) w.pid
                               AND t.locktype OPERATOR(pg_catalog.=) 'tuple' AND t.granted)
              ELSE c.relkind IN ('r', 'p') AND c.oid IN (
                  SELECT x.relation FROM pg_catalog.pg_locks x
                  JOIN pg_catalog.pg_locks y ON y.relation OPERATOR(pg_catalog.=) x.relation
                  WHERE x.pid OPERATOR(pg_catalog.=) w.pid AND y.pid OPERATOR(pg_catalog.=) b.pid
                    AND x.locktype OPERATOR(pg_catalog.=) 'relation' AND y.locktype OPERATOR(pg_catalog.=) 'relation'
                    AND x.mode OPERATOR(pg_catalog.<>) 'AccessShareLock'
                    AND y.mode OPERATOR(pg_catalog.<>) 'AccessShareLock') END),
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) l.waitstart),
       b.pid, a.state, a.xact_start, a.backend_start, a.wait_event_type, a.wait_event,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change)
FROM s w
JOIN pg_catalog.pg_locks l ON l.pid OPERATOR(pg_catalog.=) w.pid AND NOT l.granted
CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b(pid)
LEFT JOIN s a ON a.pid OPERATOR(pg_catalog.=) b.pid
WHERE w.wait_event_type OPERATOR(pg_catalog.=) 'Lock'
  AND b.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() AND b.pid OPERATOR(pg_catalog.<>) 0
"""
"""Each session of a login of the role kept waiting for a lock, with each session that keeps it waiting (review 31,
R31-6; any login of the role since review 33, R33-6): the waiter's pid, the lock it waits for (kind, advisory key,
table: for a row, the table of the tuple lock it holds, else the tables both lock for writing or row locking - an
insert waits for the transaction, not the row), seconds waited; the blocker's pid, state, transaction and session
start, wait, seconds in its state (NULL: not a session of a login of the role). A prepared transaction (pid 0) is
left out: no session to end."""

_CHAIN_WAITED = """
SELECT 1 FROM pg_catalog.pg_locks l
WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND NOT l.granted
  AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objsubid OPERATOR(pg_catalog.=) 1
  AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) %(lock)s AND l.database OPERATOR(pg_catalog.=) {database}
  AND l.waitstart OPERATOR(pg_catalog.<=)
      (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => %(waited)s))
LIMIT 1
"""
"""Whether any session waits for the audit chain's lock `waited` seconds or more (server clock; one pg_locks read)."""

_CHAIN_WAITS = """
WITH s AS (SELECT * FROM {sessions} AS x),
q AS (SELECT l.pid, l.waitstart FROM pg_catalog.pg_locks l
      WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND NOT l.granted
        AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objsubid OPERATOR(pg_catalog.=) 1
        AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) %(lock)s AND l.database OPERATOR(pg_catalog.=) {database})
SELECT w.pid, w.xact_start, pg_catalog.date_part('epoch', wq.waitstart),
       b.pid, a.state, a.xact_start, a.backend_start, a.wait_event,
       pg_catalog.date_part('epoch', a.xact_start), pg_catalog.date_part('epoch', a.state_change),
       pg_catalog.date_part('epoch', bq.waitstart), pg_catalog.date_part('epoch', pg_catalog.now())
FROM q wq
JOIN s w ON w.pid OPERATOR(pg_catalog.=) wq.pid
CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b(pid)
LEFT JOIN s a ON a.pid OPERATOR(pg_catalog.=) b.pid
LEFT JOIN q bq ON bq.pid OPERATOR(pg_catalog.=) b.pid
WHERE b.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() AND b.pid OPERATOR(pg_catalog.<>) 0
ORDER BY wq.waitstart
"""
"""Each session of a login of the role waiting for the audit chain's lock, with each session keeping it waiting -
the holder, and those queued ahead of it: the waiter's pid, transaction start and wait's start; the blocker's pid,
state, transaction and session start, wait, and (epoch seconds, server clock) its transaction's start, its current
statement's (or state's) start, its own wait for the chain's lock if it is queued; now (epoch seconds)."""

_NOW = "SELECT pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())"
"""The server's clock (epoch seconds): every time the watch counts is counted on it."""

NOT_SEEN = (
    "not one the watch may see: another role's (the owner's, a superuser's), or a login of the serving role's the"
    " owner of migration 0042's functions may not see (it needs pg_read_all_stats) or, before 0042, another login's"
)
NOT_SIGNALLED = (
    "the owner of migration 0042's functions may not signal it (tokenvault_owner needs pg_signal_backend:"
    " docs/production.md)"
)
SYNC_STANDBY = "waiting for a synchronous standby to confirm its commit (the standby is the fault)"
LET_GO = "it let go of the lock (ended its transaction or session) before it could be ended"
REFUSED = (
    "the server did not end it (under migration 0050's bounds in vault.lock_watch_floor, or pg_terminate_backend"
    " returned false)"
)


@dataclass(frozen=True)
class ChainLockHolder:
    """A session found holding a watched lock too long.

    Which lock, its pid, state and seconds held at least; whether it was ended, and why not (None when ended).
    """

    pid: int
    state: str | None
    seconds: float
    ended: bool
    lock: int = AUDIT_CHAIN_LOCK
    not_ended_because: str | None = None
    blocked: int | None = None
    """The pid of the session holding `lock` that this one kept waiting (None: it held `lock` itself)."""
    kind: str | None = None
    """For BLOCKED_A_VAULT_SESSION: the lock the vault session waited for, named (never a row's values)."""


@dataclass(frozen=True)
class _Own:
    """The sessions of this process as a round sees them: its key operations (by pid) and every session it opened."""

    key_operations: frozenset[int]
    sessions: frozenset[tuple[int, datetime | None]]

    def __call__(self, pid: int, backend_start: datetime | None) -> bool:
        """Whether the session is this process's: never ended for keeping another waiting, nor while it waits."""
        return pid in self.key_operations or (pid, backend_start) in self.sessions


@dataclass(frozen=True)
class _Blocking:
    """One `_WAITERS` row: a session of this login kept waiting, and one session that keeps it waiting."""

    waiter: int
    locktype: str
    objid: int | None
    table: str | None
    waited: float
    pid: int
    state: str | None
    xact_start: datetime | None
    backend_start: datetime | None
    waiting: bool
    wait_event: str | None
    in_state: float

    @property
    def key(self) -> tuple[int, datetime]:
        """The blocker's transaction (its session when outside one; its pid alone when this role may not see it)."""
        return (self.pid, self.xact_start or self.backend_start or datetime.min)

    @property
    def kind(self) -> str:
        """What the waiter waits for, named: an advisory lock, a table, a row of a table (never a value)."""
        if self.locktype == "advisory":
            return WATCHED_LOCKS[self.objid] if self.objid in ADVISORY_LOCKS else "an advisory lock"
        if self.locktype in ("tuple", "transactionid"):
            return f"a row of {self.table}" if self.table else "a row another transaction locked"
        if self.locktype == "relation" and self.table:
            return f"the table {self.table}"
        return f"a lock ({self.locktype})"


@dataclass(frozen=True)
class _ChainBlocker:
    """One `_CHAIN_WAITS` row: a session of the role waiting for the chain's lock, and one that keeps it waiting."""

    waiter: int
    waiter_xact: datetime | None
    waiter_queued: float
    """The waiter's wait's start (epoch seconds, server clock)."""
    pid: int
    state: str | None
    xact_start: datetime | None
    backend_start: datetime | None
    wait_event: str | None
    began: float
    """Its transaction's start (epoch seconds, server clock)."""
    statement: float
    """Its current statement's start, or its state's (epoch seconds)."""
    queued: float | None
    """Its own wait for the chain's lock's start (epoch seconds; None: it holds the lock)."""
    now: float

    def __post_init__(self) -> None:
        for name in ("waiter_queued", "began", "statement", "now"):
            object.__setattr__(self, name, float(getattr(self, name) or 0.0))
        if self.queued is not None:
            object.__setattr__(self, "queued", float(self.queued))

    @property
    def waited(self) -> float:
        """Seconds the waiter has waited."""
        return self.now - self.waiter_queued


@dataclass(frozen=True)
class _Sighting:
    """One `_HOLDERS` row: a session holding a watched lock now."""

    lock: int
    pid: int
    state: str | None
    xact_start: datetime | None
    backend_start: datetime | None
    wait_event: str | None
    in_state: float
    waiting_for_a_lock: bool = False

    @property
    def key(self) -> tuple[int, int, str, datetime]:
        """What it is remembered by: an idle session's (session-level lock) by session, else by transaction.

        A session of a role this one may not see shows no transaction start: told apart by pid only.
        """
        if self.state == "idle":
            return (self.lock, self.pid, "session", self.backend_start or datetime.min)
        return (self.lock, self.pid, "transaction", self.xact_start or datetime.min)


class ChainLockWatch:
    """Finds sessions holding the audit chain's lock or the key-generation lock and ends those that held it too long.

    Keep one instance across rounds: it remembers since when it has seen each transaction (or idle session) hold
    each lock. `own_key_sessions()`: the backend pids of this process's key operations (never ended).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        held_seconds: float = HELD_SECONDS,
        own_key_sessions: Callable[[], frozenset[int]] = KEY_JOB_SESSIONS.pids,
        own_sessions: Callable[[], frozenset[tuple[int, datetime | None]]] = PROCESS_SESSIONS.sessions,
        key_job_waited: float | None = None,
    ) -> None:
        """`held_seconds`: how long a session may hold a lock, or keep vault sessions waiting, in one transaction.

        Past it, the session is ended. `key_job_waited`: how long a key operation of this process may be kept
        waiting (KEY_JOB_WAITED_SECONDS, as it stands when the watch is made).

        `own_sessions()`: (pid, session start) of every database session of this process (never ended).
        """
        self._pool = pool
        self.held_seconds = held_seconds
        self.key_job_waited = KEY_JOB_WAITED_SECONDS if key_job_waited is None else key_job_waited
        self._own_key_sessions = own_key_sessions
        self._own_sessions = own_sessions
        self._seen: dict[tuple[int, int, str, datetime], float] = {}
        self._blocking: dict[tuple[int, datetime], tuple[float, float]] = {}
        """Each transaction seen keeping a session of the role waiting: (first seen doing so, last seen)."""
        self._sessions = _OWN_LOGIN_SESSIONS
        self._end_sql = _END_OWN_LOGIN
        self.blind: str | None = None
        """Why the watch cannot see or end sessions of every login of the role (None: it can); logged once."""
        self._queued: dict[tuple[int, datetime], float] = {}
        """Each transaction seen queued for the chain's lock: its wait's start (epoch seconds, server clock)."""
        self._holding: dict[tuple[int, datetime], float] = {}
        """Each transaction seen holding the chain's lock while a session waited 1 s: when first (epoch seconds)."""
        self._chain_pass = threading.Lock()
        """The chain-wait rule runs on a thread of its own (`watch_chain_waits`) and may be called from a round."""
        self.hogs = LockHogWatch(lambda: _connect_like(pool), own_sessions, own_key_sessions)
        """The lock-hog rule (attack 29, F1): run first in each look of `watch_chain_waits`, on its own connection."""

    def _reach(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Use migration 0042's functions when they are there; say once, loudly, what the watch cannot reach."""
        row = conn.execute(_REACH).fetchone()
        functions, sees, signals = (bool(row[0]), bool(row[1]), bool(row[2])) if row else (False, False, False)
        self._sessions, self._end_sql = (_SESSIONS, _END) if functions else (_OWN_LOGIN_SESSIONS, _END_OWN_LOGIN)
        if not functions:
            blind = (
                "migration 0042 is not applied: the lock watch sees and ends sessions of its own login only, never"
                " those of the role's other logins (other pods' Vault-made users, anyone given the role's credentials)"
            )
        elif not (sees and signals):
            lacks = " and ".join(
                n for n, has in (("pg_read_all_stats", sees), ("pg_signal_backend", signals)) if not has
            )
            blind = (
                f"the owner of migration 0042's functions (tokenvault_owner) lacks {lacks}:"
                " the lock watch cannot see or end sessions of the role's other logins (other pods' Vault-made users,"
                " anyone given the role's credentials); grant it (docs/production.md)"
            )
        else:
            blind = None
        if blind is not None and blind != self.blind:
            log.warning(blind)
        self.blind = blind

    def end_stale_holders(self) -> list[ChainLockHolder]:
        """Each other session seen holding a watched lock for `held_seconds` or more; those it may end, ended.

        Ended ones are logged (lock, pid, state, seconds; never the session's statement or user) as an
        error; holders left as a warning with the reason. Database errors propagate (the caller logs them).
        """
        found: list[ChainLockHolder] = []
        seen: dict[tuple[int, int, str, datetime], float] = {}
        started = time.monotonic()
        with self._pool.connection() as conn:
            self._reach(conn)
            now = _server_now(conn)
            own = self._own()
            holders = _HOLDERS.format(sessions=self._sessions, database=_THIS_DATABASE)
            for row in conn.execute(holders, (list(ADVISORY_LOCKS),)).fetchall():
                sighting = _Sighting(
                    int(row[0]),
                    int(row[1]),
                    _text(row[2]),
                    row[3],
                    row[4],
                    _text(row[5]),
                    float(row[6] or 0.0),
                    row[7] == "Lock",
                )
                if sighting.pid in {h.pid for h in found if h.ended}:
                    continue  # ended this round already (as what blocked another): one line per session
                own_key_operation = sighting.lock != AUDIT_CHAIN_LOCK and sighting.pid in own.key_operations
                if own_key_operation and not sighting.waiting_for_a_lock:
                    continue  # a key operation of this process: bounded waits, never ended (keys.py)
                if sighting.lock == DATA_KEY_ROWS and sighting.state == "idle":
                    continue  # a row lock ends with its transaction: one just ended (the two views differ)
                seen[sighting.key] = self._seen.get(sighting.key, now)
                held = now - seen[sighting.key]
                if sighting.state is not None and sighting.state.startswith("idle in transaction"):
                    held = max(held, sighting.in_state)  # it took the lock before it went idle
                if held < self.held_seconds:
                    continue
                if sighting.waiting_for_a_lock and own(sighting.pid, sighting.backend_start):
                    # this process kept waiting: end what keeps it waiting, never it (review 31)
                    if sighting.pid not in {h.blocked for h in found}:  # once per waiter (it may hold two locks)
                        found.extend(self._end_blockers(conn, sighting, held, own))
                    continue
                # Anyone else's session: ended, waiting or not. One holding the lock while it waits on a relay of
                # short blockers would otherwise hold it for ever (attack 28, F4); the vault's waits last 2 s.
                ended, why = self._end(conn, sighting)
                found.append(ChainLockHolder(sighting.pid, sighting.state, held, ended, sighting.lock, why))
            look_again = self._end_what_keeps_vault_sessions_waiting(conn, own, found)
        self._seen = seen
        until = started + self.key_job_waited + 1.0  # the rest of a key operation's 2 s wait, at most
        while look_again and time.monotonic() < until:  # a key operation of this process waits: look again soon
            time.sleep(0.25)
            with self._pool.connection() as conn:
                look_again = self._end_what_keeps_vault_sessions_waiting(conn, self._own(), found)
        for holder in found:
            _log(holder)
        return found

    def end_what_keeps_chain_appends_waiting(self) -> list[ChainLockHolder]:
        """The chain-wait rule (review 33, R33-1): what keeps a session of the role waiting 1 s for the chain's lock.

        Timed from the waiter's side, on the server's clock: once a session of any login of the role has waited
        CHAIN_WAITED_SECONDS for the audit chain's lock (its append gives up at 2 s), each session keeping it waiting
        - the holder, or one queued ahead of it - that is not this process's and is not one of the vault's appends
        (`_did_something_first`) is ended, only if still in that transaction and still keeping it waiting. The
        vault's appends wait for the lock in the statement that begins their transaction, give up at 2 s and hold
        it for their commit: another replica's append queued ahead, or just granted, is left. Looked at again at
        once after each ending (the next in the queue gets the lock), up to ten times. One line per session ended.
        """
        found: list[ChainLockHolder] = []
        args = {"lock": AUDIT_CHAIN_LOCK, "waited": CHAIN_SEEN_WAITING_SECONDS}
        with self._chain_pass, self._pool.connection() as conn:
            if conn.execute(_CHAIN_WAITED.format(database=_THIS_DATABASE), args).fetchone() is None:
                return found
            self._reach(conn)
            own = self._own()
            done: set[int] = set()
            for _ in range(10):
                ended_any = False
                rows = [
                    _ChainBlocker(*row)
                    for row in conn.execute(
                        _CHAIN_WAITS.format(sessions=self._sessions, database=_THIS_DATABASE), args
                    ).fetchall()
                ]
                for row in rows:  # every queued session's wait, first: a holder granted later is told by it
                    if row.waiter_xact is not None:
                        self._queued.setdefault((row.waiter, row.waiter_xact), row.waiter_queued)
                for suspect in rows:
                    if suspect.waited < CHAIN_WAITED_SECONDS or suspect.pid in done:
                        continue
                    if own(suspect.pid, suspect.backend_start):
                        continue
                    if suspect.xact_start is None or not self._did_something_first(suspect):
                        continue  # not a session of the role's logins, or maybe the vault's append: left
                    done.add(suspect.pid)
                    ended: bool
                    why: str | None
                    if suspect.wait_event == "SyncRep":
                        ended, why = False, SYNC_STANDBY
                    else:
                        ended, why = self._end_session(
                            conn,
                            suspect.pid,
                            suspect.backend_start,
                            suspect.xact_start,
                            _STILL_BLOCKING,
                            waiter=suspect.waiter,
                        )
                    if why == LET_GO:
                        continue  # it let go first: nothing to report
                    ended_any = ended_any or ended
                    holder = ChainLockHolder(
                        suspect.pid,
                        suspect.state,
                        suspect.waited,
                        ended,
                        BLOCKED_A_VAULT_SESSION,
                        why,
                        blocked=suspect.waiter,
                        kind=WATCHED_LOCKS[AUDIT_CHAIN_LOCK],
                    )
                    found.append(holder)
                if not ended_any:
                    break
            now = max((row.now for row in rows), default=0.0)
            for memory in (self._queued, self._holding):
                for key, since in list(memory.items()):
                    if now - since > BLOCKER_MEMORY_SECONDS:
                        del memory[key]
        for holder in found:
            _log(holder)
        return found

    def _did_something_first(self, blocker: _ChainBlocker) -> bool:
        """Whether a session keeping a chain-lock append waiting is not one of the vault's appends.

        Queued ahead: its transaction began DID_SOMETHING_FIRST_SECONDS before its wait, or it has waited longer
        than any append may. Holding: idle in its transaction; its statement began that long after its transaction,
        or after a wait for the lock seen before; seen holding it 0.2 s ago or more (an append holds it for the
        moment of its commit); never seen queued and its transaction older than 1 s (every wait of 0.5 s and more
        is seen: it took the lock at once, it did not wait in the statement that began its transaction).
        """
        key = (blocker.pid, blocker.xact_start or datetime.min)
        if blocker.queued is not None:
            self._queued.setdefault(key, blocker.queued)
            return (
                blocker.queued - blocker.began > DID_SOMETHING_FIRST_SECONDS
                or blocker.now - blocker.queued > APPEND_WAIT_BOUND_SECONDS
            )
        holding_since = self._holding.setdefault(key, blocker.now)
        seen_queued = self._queued.get(key)
        return (
            (blocker.state or "").startswith("idle in transaction")
            or blocker.statement - blocker.began > DID_SOMETHING_FIRST_SECONDS
            or (seen_queued is not None and blocker.statement > seen_queued)
            or blocker.now - holding_since >= HELD_AN_APPEND_SECONDS
            or (seen_queued is None and blocker.now - blocker.began > CHAIN_WAITED_SECONDS)
            or blocker.now - blocker.statement > APPEND_WAIT_BOUND_SECONDS
        )

    def watch_chain_waits(
        self,
        on_found: Callable[[ChainLockHolder], None] = lambda holder: None,
        every: float = CHAIN_LOOK_SECONDS,
        stop: threading.Event | None = None,
    ) -> None:
        """Apply the chain-wait rule every `every` seconds until `stop` is set or the pool closes (a thread's target).

        The upkeep's rounds come every 2 s and an append waits 2 s at most: a rule applied only then misses most
        waits. Each look is one read of pg_locks while no session waits 1 s for the chain's lock. `on_found` is
        told of each session ended or left. A failed look is logged (its error's type, once until one succeeds).
        Each look first applies the lock-hog rule (`LockHogWatch`, attack 29 F1; `kind` LOCK_TABLE), whose
        connection is closed when the loop ends.
        """
        stop = stop or threading.Event()
        failing = False
        hogs_failing = False
        while not stop.wait(every) and not self._pool.closed:
            try:  # first: on a full lock table, the chain-wait look below fails until the hog is ended
                for hog in self.hogs.end_lock_hogs():
                    on_found(ChainLockHolder(hog.pid, None, 0.0, hog.ended, BLOCKED_A_VAULT_SESSION, kind=LOCK_TABLE))
                hogs_failing = False
            except Exception as error:
                if not hogs_failing and not self._pool.closed:
                    log.warning("the lock-hog watch failed (tried again)", extra={"error": type(error).__name__})
                hogs_failing = True
            try:
                for holder in self.end_what_keeps_chain_appends_waiting():
                    on_found(holder)
                failing = False
            except Exception as error:
                if self._pool.closed:
                    break
                if not failing:
                    log.warning("the chain-lock wait watch failed (tried again)", extra={"error": type(error).__name__})
                failing = True
        self.hogs.close()

    def _own(self) -> _Own:
        return _Own(self._own_key_sessions(), self._own_sessions())

    def _end_what_keeps_vault_sessions_waiting(
        self, conn: psycopg.Connection[tuple[object, ...]], own: _Own, found: list[ChainLockHolder]
    ) -> bool:
        """End the sessions that keep sessions of this login waiting for any lock, too long (review 31, R31-6, R31-2).

        A call's budget take, lookup or insert, an append, a key job: a session of the role that keeps one
        waiting in one transaction over `held_seconds` (since first seen doing so, or since it went idle in
        that transaction) is not the vault at work - the vault's transactions that others wait for last a
        statement or a key operation's few, and one that holds a watched lock 5 s is ended anyway - so it is
        ended, whatever lock it is: a client's call-budget row, a key row, a row of vault.tokens, and whether
        or not it is itself waiting for a lock (attack 28, F4: a holder waiting on a relay). Never a session of
        this process, never one waiting for a synchronous standby.

        A key operation of this process kept waiting `key_job_waited` (half its own 2 s wait) has what keeps
        it waiting ended at once, however short each holder's own transaction: a relay of sessions each
        holding the key-generation lock (or a key row) under `held_seconds` would refuse every key job
        (R31-2). Another process's key operation holding the lock that long is ended too: nothing it does
        can be told from what a session with the role's password does (docs/threat-model.md). Appends
        found to `found` (one per session and round); True while such a key operation waits, not yet
        that long (look again soon).
        """
        now = _server_now(conn)
        reported = {h.pid for h in found}
        look_again = False
        for row in conn.execute(_WAITERS.format(sessions=self._sessions)).fetchall():
            blocking = _Blocking(
                int(str(row[0])),
                str(row[1]),
                None if row[2] is None else int(str(row[2])),
                _text(row[3]),
                float(str(row[4] or 0.0)),
                int(str(row[5])),
                _text(row[6]),
                row[7],  # type: ignore[arg-type]
                row[8],  # type: ignore[arg-type]
                row[9] == "Lock",
                _text(row[10]),
                float(str(row[11] or 0.0)),
            )
            if own(blocking.pid, blocking.backend_start) or blocking.pid in reported:
                continue
            first, _ = self._blocking.get(blocking.key, (now, now))
            self._blocking[blocking.key] = (first, now)
            held = now - first
            if blocking.state is not None and blocking.state.startswith("idle in transaction"):
                held = max(held, blocking.in_state)  # it took what it holds before it went idle
            key_job = blocking.waiter in own.key_operations
            kept_a_key_job = key_job and blocking.waited >= self.key_job_waited
            if held < self.held_seconds and not kept_a_key_job:
                look_again = look_again or key_job
                continue
            ended, why = self._end_blocker(conn, blocking)
            reported.add(blocking.pid)
            seconds = max(held, blocking.waited) if kept_a_key_job else held
            found.append(
                ChainLockHolder(
                    blocking.pid,
                    blocking.state,
                    seconds,
                    ended,
                    BLOCKED_A_VAULT_SESSION,
                    why,
                    blocked=blocking.waiter,
                    kind=blocking.kind,
                )
            )
        for key, (_, last) in list(self._blocking.items()):
            if now - last > BLOCKER_MEMORY_SECONDS:
                del self._blocking[key]
        return look_again

    def _end_session(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        pid: int,
        started: datetime | None,
        xact: datetime | None,
        still: str = "true",
        **args: object,
    ) -> tuple[bool, str | None]:
        """End the session if it is still that session in that transaction and `still` holds; whether, and why not.

        Through vault.end_role_session (migration 0042: any login of the role, never a non-member's, a superuser's,
        this one's; only while it holds a watched lock or keeps a session of the role waiting), else as this login.
        """
        if started is None:
            return False, NOT_SEEN
        query = self._end_sql.format(still=still)
        try:
            row = conn.execute(query, {"pid": pid, "started": started, "xact": xact, **args}).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False, NOT_SIGNALLED
        if row is None or row[0] is None:
            return False, LET_GO
        return (True, None) if row[0] else (False, REFUSED)

    def _end_blocker(
        self, conn: psycopg.Connection[tuple[object, ...]], blocking: _Blocking
    ) -> tuple[bool, str | None]:
        """End the blocking session if it is in the transaction seen and still blocks; why not."""
        if blocking.wait_event == "SyncRep":
            return False, SYNC_STANDBY
        return self._end_session(
            conn, blocking.pid, blocking.backend_start, blocking.xact_start, _STILL_BLOCKING, waiter=blocking.waiter
        )

    def _end_blockers(
        self, conn: psycopg.Connection[tuple[object, ...]], waiter: _Sighting, held: float, own: _Own
    ) -> list[ChainLockHolder]:
        """End the sessions that keep `waiter` (this process's, holding a watched lock) waiting, if still so.

        A session of this process holding a watched lock while it waits for another lock is a victim: a key
        job waiting for a key row a relay of short transactions keeps locked, or its rewrap (review 31,
        R31-1, R31-5: the watch ended the vault's own sessions and never the relay). What keeps it waiting
        is ended instead, whatever the length of its own transaction; never a session of this process.
        Anyone else's waiting holder is ended itself (attack 28, F4). Each one is reported like a holder
        (`blocked` names the waiter).
        """
        found = []
        for row in conn.execute(_BLOCKERS.format(sessions=self._sessions), (waiter.pid,)).fetchall():
            blocker = int(str(row[0]))
            if own(blocker, row[1]):  # type: ignore[arg-type]
                continue
            ended: bool
            why: str | None
            if row[3] == "SyncRep":
                ended, why = False, SYNC_STANDBY
            else:
                ended, why = self._end_session(
                    conn,
                    blocker,
                    row[1],  # type: ignore[arg-type]
                    row[2],  # type: ignore[arg-type]
                    _STILL_BLOCKING,
                    waiter=waiter.pid,
                )
            found.append(ChainLockHolder(blocker, None, held, ended, waiter.lock, why, blocked=waiter.pid))
        return found

    def _end(self, conn: psycopg.Connection[tuple[object, ...]], sighting: _Sighting) -> tuple[bool, str | None]:
        """End the session if it still holds the lock as seen; whether it was ended, and why not."""
        if sighting.state == "idle" and sighting.backend_start is not None:
            return self._end_session(
                conn, sighting.pid, sighting.backend_start, None, _STILL_HOLDING, lock=sighting.lock
            )
        if sighting.xact_start is None:
            return False, NOT_SEEN
        if sighting.wait_event == "SyncRep":
            return False, SYNC_STANDBY
        return self._end_session(conn, sighting.pid, sighting.backend_start, sighting.xact_start)


def _connect_like(pool: ConnectionPool) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of its own, made as the pool makes its connections (same DSN, startup options, autocommit)."""
    kwargs = pool.kwargs() if callable(pool.kwargs) else (pool.kwargs or {})
    return psycopg.connect(conninfo_now(pool.conninfo), **kwargs)  # a DSN file read again: its rotated login


def _server_now(conn: psycopg.Connection[tuple[object, ...]]) -> float:
    row = conn.execute(_NOW).fetchone()
    return float(str(row[0])) if row else time.time()


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _log(holder: ChainLockHolder) -> None:
    """One line per holder: ended (an error: report it) or left (a warning with the true reason)."""
    if holder.lock == BLOCKED_A_VAULT_SESSION:
        _log_blocker(holder)
        return
    name = WATCHED_LOCKS[holder.lock]
    fails = "every audited call" if holder.lock == AUDIT_CHAIN_LOCK else "every new token"
    form = " (its session-level form, which the vault never takes)" if holder.state == "idle" else ""
    extra = {"pid": holder.pid, "state": holder.state, "seconds": round(holder.seconds, 1), "lock": name}
    if holder.blocked is not None:
        extra["blocked_pid"] = holder.blocked
        done = "ended" if holder.ended else f"could not end ({holder.not_ended_because})"
        (log.error if holder.ended else log.warning)(
            f"{done} a database session that kept a session holding {name} waiting for seconds (the waiting one,"
            " maybe the vault's own key operation or rewrap, is left to finish): someone with the serving role's"
            " credentials, or a client of it that hung. Report it to the security team (docs/threat-model.md,"
            " serving role)",
            extra=extra,
        )
        return
    if holder.ended:
        log.error(
            f"ended a database session that held {name}{form} for seconds, keeping {fails} out: someone with the"
            " serving role's credentials (or a client of it that hung). Report it to the security team"
            " (docs/threat-model.md, serving role)",
            extra=extra,
        )
    else:
        log.warning(
            f"a database session holds {name}{form} and was not ended: {holder.not_ended_because}. {fails.capitalize()}"
            " fails until it lets go. Look it up in pg_stat_activity",
            extra=extra,
        )


def _log_blocker(holder: ChainLockHolder) -> None:
    """One line for a session that kept a vault session waiting: pid, the lock waited for, seconds; no values."""
    extra = {
        "pid": holder.pid,
        "state": holder.state,
        "seconds": round(holder.seconds, 1),
        "lock": holder.kind,
        "blocked_pid": holder.blocked,
    }
    if holder.ended:
        log.error(
            f"ended a database session that kept a session of the vault waiting for {holder.kind} for seconds"
            " (calls, or a key job, fail meanwhile): someone with the serving role's credentials, or a client of"
            " it that hung. Report it to the security team (docs/threat-model.md, serving role)",
            extra=extra,
        )
    else:
        log.warning(
            f"a database session keeps a session of the vault waiting for {holder.kind} and was not ended:"
            f" {holder.not_ended_because}. Look it up in pg_stat_activity",
            extra=extra,
        )
