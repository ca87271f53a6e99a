"""Sessions that hold the audit chain's lock, the key-generation lock or key rows for seconds, ended (attacks 26-27).

The chain trigger takes `pg_advisory_xact_lock(AUDIT_CHAIN_LOCK)` for every append and holds it to
commit (migrations 0006/0025/0035). The vault's own transactions hold it for milliseconds: the
append is the last statement before the commit (the service's appends, and the audited functions'
rows, written at their end). A session seen holding it in the same transaction for HELD_SECONDS is
therefore never the vault at work: it is someone with the serving role's password keeping every
append (so every reveal) out - idle in the transaction, or `active` in a `pg_sleep` or any slow
statement after its append - or a client of the role that hung mid-transaction. The audit upkeep
ends such sessions every round (`pg_terminate_backend`: a role may end sessions of roles it has the
privileges of, here its own), so the vault does not stay frozen; appends kept waiting meanwhile fail
after 2 s (migration 0035).

The key-generation lock (`KEYS_LOCK`, keys.py) is watched the same way (attack 27, F3): token
inserts take it shared for their transaction (milliseconds; their wait is bounded to 2 s), the
vault's key operations exclusively for a few statements, each lock wait in them bounded to 2 s
(keys.py `lock_keys_and_rows`; the Transit call that makes a first key runs before it). A holder
for HELD_SECONDS in one transaction is ended like a chain-lock holder, except a key operation of
this process (`KEY_JOB_SESSIONS`, by backend pid), which is never ended.

Rows of vault.data_keys are watched the same way (attack 27, F5): a new token's insert locks the keys
it names FOR SHARE (migration 0037, waiting 2 s), so a session of the role holding a key row FOR UPDATE
(its column UPDATE grant allows it) or an uncommitted UPDATE of one makes every new token fail. The
vault's own row locks there last a transaction of moments (an insert, a key operation's few statements,
a rewrap's UPDATE); a session holding one (any lock on the table but a plain read's) 5 s in one
transaction is ended, a key operation of this process never.

A session holding either advisory lock while `idle` - outside any transaction - holds the session-level
form (`pg_advisory_lock`), which the vault never takes (only the migrator does, as the owner, on
a key of its own): it is ended once seen holding it for HELD_SECONDS in the same session (pid and
backend start; attack 27, F2), counted from the first round that saw it, and only if at that moment
it is still idle and holding the lock.

How long a session has held a lock in a transaction: since it went idle, for one idle in its
transaction (it took the lock before); otherwise since a round first saw it holding the lock in that
transaction (the same pid and transaction start: a transaction-level lock is released only at the
transaction's end). Not ended, each logged with the reason and counted: a holder waiting for a
synchronous standby to confirm its commit (`SyncRep`: the standby is the fault, and the commit is
already local), a session of a role this one may not see or signal (Vault-made users of the role,
the owner's), and one that let go before it could be ended; calls fail fast meanwhile
(docs/threat-model.md says what holds then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import ConnectionPool

from vault_service.adapters.postgres.keys import KEY_JOB_SESSIONS, KEYS_LOCK

log = logging.getLogger(__name__)

AUDIT_CHAIN_LOCK = 1635083380  # 0x61756474, 'audt': the chain trigger's advisory lock
HELD_SECONDS = 5.0
"""How long a session may hold the chain's lock in one transaction before it is ended."""

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

_HOLDERS = """
SELECT l.objid::pg_catalog.int8, a.pid, a.state, a.xact_start, a.backend_start, a.wait_event,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change), a.wait_event_type
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
  AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objsubid OPERATOR(pg_catalog.=) 1
  AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int8[])
  AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                          WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
UNION ALL
SELECT 0, a.pid, a.state, a.xact_start, a.backend_start, a.wait_event,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change), a.wait_event_type
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
WHERE l.locktype OPERATOR(pg_catalog.=) 'relation' AND l.granted
  AND l.relation OPERATOR(pg_catalog.=) 'vault.data_keys'::pg_catalog.regclass
  AND l.mode OPERATOR(pg_catalog.<>) 'AccessShareLock'
  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
"""
"""Every other session holding a watched lock: the lock (DATA_KEY_ROWS for a row-locking or writing lock on
vault.data_keys: a plain read's AccessShareLock blocks no key job or insert), pid, state, transaction start,
session start and wait (NULL when this role may not see them), seconds in its state, kind of wait ('Lock':
it waits for a lock another session holds)."""

_END_IF_SAME_TRANSACTION = """
SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a
WHERE a.pid OPERATOR(pg_catalog.=) %s AND a.xact_start OPERATOR(pg_catalog.=) %s
  AND a.wait_event IS DISTINCT FROM 'SyncRep'
"""
"""End the session only if it is still in the transaction found holding the lock, not waiting for a standby."""

_END_IF_STILL_IDLE_HOLDING = """
SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a
WHERE a.pid OPERATOR(pg_catalog.=) %(pid)s AND a.backend_start OPERATOR(pg_catalog.=) %(started)s
  AND a.state OPERATOR(pg_catalog.=) 'idle'
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
              WHERE l.pid OPERATOR(pg_catalog.=) a.pid AND l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
                AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objsubid OPERATOR(pg_catalog.=) 1
                AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) %(lock)s)
"""
"""End the session only if it is the same session, still outside a transaction and still holding the lock."""

_BLOCKERS = """
SELECT b FROM pg_catalog.unnest(pg_catalog.pg_blocking_pids(%s)) AS b
WHERE b OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
"""
"""The sessions a waiting session waits for (review 31: the watch ends those, never the one that waits)."""

_END_IF_STILL_BLOCKING = """
SELECT pg_catalog.pg_terminate_backend(%(blocker)s)
WHERE %(blocker)s OPERATOR(pg_catalog.=) ANY(pg_catalog.pg_blocking_pids(%(waiter)s))
"""
"""End the blocking session only if it still blocks the waiting one."""

NOT_SEEN = "of a role this one may not see or signal (a Vault-made user of the role, or another role)"
NOT_SIGNALLED = "of a role this one may not signal (a Vault-made user of the role, or another role)"
SYNC_STANDBY = "waiting for a synchronous standby to confirm its commit (the standby is the fault)"
LET_GO = "it let go of the lock (ended its transaction or session) before it could be ended"
REFUSED = "the server did not end it (pg_terminate_backend returned false)"


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
    ) -> None:
        """`held_seconds`: how long a session may hold a lock in one transaction before it is ended."""
        self._pool = pool
        self.held_seconds = held_seconds
        self._own_key_sessions = own_key_sessions
        self._seen: dict[tuple[int, int, str, datetime], float] = {}

    def end_stale_holders(self) -> list[ChainLockHolder]:
        """Each other session seen holding a watched lock for `held_seconds` or more; those it may end, ended.

        Ended ones are logged (lock, pid, state, seconds; never the session's statement or user) as an
        error; holders left as a warning with the reason. Database errors propagate (the caller logs them).
        """
        found: list[ChainLockHolder] = []
        now = time.monotonic()
        seen: dict[tuple[int, int, str, datetime], float] = {}
        with self._pool.connection() as conn:
            own = self._own_key_sessions()
            for row in conn.execute(_HOLDERS, (list(ADVISORY_LOCKS),)).fetchall():
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
                own_key_operation = sighting.lock != AUDIT_CHAIN_LOCK and sighting.pid in own
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
                if sighting.waiting_for_a_lock:  # kept waiting: end what keeps it waiting, never it (review 31)
                    if sighting.pid not in {h.blocked for h in found}:  # once per waiter (it may hold two locks)
                        found.extend(self._end_blockers(conn, sighting, held, own))
                    continue
                ended, why = self._end(conn, sighting)
                found.append(ChainLockHolder(sighting.pid, sighting.state, held, ended, sighting.lock, why))
        self._seen = seen
        for holder in found:
            _log(holder)
        return found

    @staticmethod
    def _end_blockers(
        conn: psycopg.Connection[tuple[object, ...]], waiter: _Sighting, held: float, own: frozenset[int]
    ) -> list[ChainLockHolder]:
        """End the sessions that keep `waiter` (holding a watched lock) waiting, if still so; the vault's own aside.

        A session holding a watched lock while it waits for another lock is a victim: a vault key job
        waiting for a key row a relay of short transactions keeps locked, or the replicas' own rewrap
        (review 31, R31-1, R31-5: the watch ended the vault's own sessions and never the relay). What
        keeps it waiting is ended instead, whatever the length of its own transaction; never this
        process's key operations. Each one is reported like a holder (`blocked` names the waiter).
        """
        found = []
        for (blocker,) in conn.execute(_BLOCKERS, (waiter.pid,)).fetchall():
            if blocker in own:
                continue
            try:
                row = conn.execute(_END_IF_STILL_BLOCKING, {"blocker": blocker, "waiter": waiter.pid}).fetchone()
                ended, why = (True, None) if row is not None and row[0] else (False, LET_GO if row is None else REFUSED)
            except psycopg.errors.InsufficientPrivilege:
                ended, why = False, NOT_SIGNALLED
            found.append(ChainLockHolder(int(str(blocker)), None, held, ended, waiter.lock, why, blocked=waiter.pid))
        return found

    @staticmethod
    def _end(conn: psycopg.Connection[tuple[object, ...]], sighting: _Sighting) -> tuple[bool, str | None]:
        """End the session if it still holds the lock as seen; whether it was ended, and why not."""
        if sighting.state == "idle" and sighting.backend_start is not None:
            query: str = _END_IF_STILL_IDLE_HOLDING
            args: Sequence[object] | Mapping[str, object] = {
                "pid": sighting.pid,
                "started": sighting.backend_start,
                "lock": sighting.lock,
            }
        elif sighting.xact_start is None:
            return False, NOT_SEEN
        elif sighting.wait_event == "SyncRep":
            return False, SYNC_STANDBY
        else:
            query, args = _END_IF_SAME_TRANSACTION, (sighting.pid, sighting.xact_start)
        try:
            row = conn.execute(query, args).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False, NOT_SIGNALLED
        if row is None:
            return False, LET_GO
        return (True, None) if row[0] else (False, REFUSED)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _log(holder: ChainLockHolder) -> None:
    """One line per holder: ended (an error: report it) or left (a warning with the true reason)."""
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
