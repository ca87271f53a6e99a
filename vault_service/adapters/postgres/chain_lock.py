"""Sessions that hold the audit chain's lock for seconds, ended (attack 26, F2).

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

How long a session has held the lock: since it went idle, for one idle in its transaction (it took
the lock before); otherwise since a round first saw it holding the lock in that transaction (the
same pid and transaction start: a transaction-level lock is released only at the transaction's
end). Not ended: a holder waiting for a synchronous standby to confirm its commit (`SyncRep`: the
standby is the fault, and the commit is already local), and a session of a role this one may not
signal (Vault-made users of the role, the owner's): both are logged and counted, and calls fail fast
meanwhile (docs/threat-model.md says what holds then).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

AUDIT_CHAIN_LOCK = 1635083380  # 0x61756474, 'audt': the chain trigger's advisory lock
HELD_SECONDS = 5.0
"""How long a session may hold the chain's lock in one transaction before it is ended."""

_HOLDERS = """
SELECT a.pid, a.state, a.xact_start, a.wait_event,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change)
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
  AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objid OPERATOR(pg_catalog.=) %s AND l.objsubid OPERATOR(pg_catalog.=) 1
  AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                          WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
"""
"""Every other session holding the chain's lock: pid, state, transaction start and wait (NULL when this
role may not see them), seconds in its state."""

_END_IF_SAME_TRANSACTION = """
SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a
WHERE a.pid OPERATOR(pg_catalog.=) %s AND a.xact_start OPERATOR(pg_catalog.=) %s
  AND a.wait_event IS DISTINCT FROM 'SyncRep'
"""
"""End the session only if it is still in the transaction found holding the lock, not waiting for a standby."""


@dataclass(frozen=True)
class ChainLockHolder:
    """A session found holding the audit chain's lock too long (its pid, state and seconds held at least)."""

    pid: int
    state: str | None
    seconds: float
    ended: bool


class ChainLockWatch:
    """Finds sessions holding the audit chain's lock and ends those that held it too long in one transaction.

    Keep one instance across rounds: it remembers since when it has seen each transaction hold the lock.
    """

    def __init__(self, pool: ConnectionPool, held_seconds: float = HELD_SECONDS) -> None:
        """`held_seconds`: how long a session may hold the lock in one transaction before it is ended."""
        self._pool = pool
        self.held_seconds = held_seconds
        self._seen: dict[tuple[int, datetime], float] = {}

    def end_stale_holders(self) -> list[ChainLockHolder]:
        """Each other session seen holding the lock for `held_seconds` or more; those it may end, ended.

        Ended ones are logged (pid, state, seconds; never the session's statement or user) as an
        error; holders left (waiting for a standby, or of a role this one may not signal) as a
        warning. Database errors propagate (the caller logs them).
        """
        found: list[ChainLockHolder] = []
        now = time.monotonic()
        seen: dict[tuple[int, datetime], float] = {}
        with self._pool.connection() as conn:
            for pid, state, xact_start, wait_event, in_state in conn.execute(_HOLDERS, (AUDIT_CHAIN_LOCK,)).fetchall():
                # A session of a role this one may not see shows no transaction start: told apart by pid only.
                key = (int(pid), xact_start or datetime.min)
                seen[key] = self._seen.get(key, now)
                held = now - seen[key]
                if str(state).startswith("idle in transaction"):
                    held = max(held, float(in_state or 0.0))
                if held < self.held_seconds:
                    continue
                visible = xact_start is not None and wait_event != "SyncRep"
                ended = visible and self._end(conn, int(pid), xact_start)
                found.append(ChainLockHolder(int(pid), None if state is None else str(state), held, ended))
        self._seen = seen
        for holder in found:
            if holder.ended:
                log.error(
                    "ended a database session that held the audit chain's lock for seconds, keeping every audited"
                    " call out: someone with the serving role's credentials (or a client of it that hung)."
                    " Report it to the security team (docs/threat-model.md, serving role)",
                    extra={"pid": holder.pid, "state": holder.state, "seconds": round(holder.seconds, 1)},
                )
            else:
                log.warning(
                    "a database session holds the audit chain's lock and was not ended (of a role this one may not"
                    " signal, or waiting for a synchronous standby): audited calls fail until it lets go. Look it"
                    " up in pg_stat_activity",
                    extra={"pid": holder.pid, "state": holder.state, "seconds": round(holder.seconds, 1)},
                )
        return found

    @staticmethod
    def _end(conn: psycopg.Connection[tuple[object, ...]], pid: int, xact_start: datetime) -> bool:
        try:
            row = conn.execute(_END_IF_SAME_TRANSACTION, (pid, xact_start)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False
        return bool(row and row[0])
