"""Sessions that hold the audit chain's lock in a transaction left idle, ended (attack 26, F2).

The chain trigger takes `pg_advisory_xact_lock(AUDIT_CHAIN_LOCK)` for every append and holds it to
commit (migrations 0006/0025/0035). The vault's own transactions hold it for milliseconds: an
append, or a key job's batch function, then the commit, with no wait in between. A session that
holds it while `idle in transaction` for IDLE_SECONDS is therefore never the vault at work: it is
someone with the serving role's password keeping every append (so every reveal) out, or a client
of the role that crashed mid-transaction. The audit upkeep ends such sessions every round
(`pg_terminate_backend`: a role may end sessions of roles it has the privileges of, here its own),
so the vault does not stay frozen; appends kept waiting meanwhile fail after 2 s (migration 0035).

Not ended: a holder that is `active` (a hostile `pg_sleep` inside the transaction looks like the
vault's own batch statement), or a session of a role this one may not signal (Vault-made users of
the role, the owner's): both are logged as found and counted, and calls fail fast meanwhile
(docs/threat-model.md says what holds then).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

AUDIT_CHAIN_LOCK = 1635083380  # 0x61756474, 'audt': the chain trigger's advisory lock
IDLE_SECONDS = 5.0
"""How long a session may hold the chain's lock idle in a transaction before it is ended."""

_HOLDERS = """
SELECT a.pid, a.state, a.state_change,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change)
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
  AND l.classid OPERATOR(pg_catalog.=) 0 AND l.objid OPERATOR(pg_catalog.=) %s AND l.objsubid OPERATOR(pg_catalog.=) 1
  AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                          WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
"""
"""Every other session holding the chain's lock: pid, state (NULL when this role may not see it), since when."""

_END_IF_STILL_IDLE = """
SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a
WHERE a.pid OPERATOR(pg_catalog.=) %s AND a.state_change OPERATOR(pg_catalog.=) %s
"""
"""End the session only if it has not moved since it was found (the same idle spell, not a new transaction)."""


@dataclass(frozen=True)
class ChainLockHolder:
    """A session found holding the audit chain's lock (its pid, state and seconds in that state)."""

    pid: int
    state: str | None
    seconds: float
    ended: bool


class ChainLockWatch:
    """Finds sessions holding the audit chain's lock and ends those idle in a transaction too long."""

    def __init__(self, pool: ConnectionPool, idle_seconds: float = IDLE_SECONDS) -> None:
        """`idle_seconds`: how long a holder may stay idle in its transaction before it is ended."""
        self._pool = pool
        self.idle_seconds = idle_seconds

    def end_idle_holders(self) -> list[ChainLockHolder]:
        """Each other session holding the lock for over `idle_seconds`, those idle in a transaction ended.

        Ended ones are logged (pid, state, seconds; never the session's statement or user) as an
        error; holders left (active, or not visible to this role) as a warning. Database errors
        propagate (the caller logs and counts them).
        """
        found: list[ChainLockHolder] = []
        with self._pool.connection() as conn:
            for pid, state, since, seconds in conn.execute(_HOLDERS, (AUDIT_CHAIN_LOCK,)).fetchall():
                if seconds is None or float(seconds) < self.idle_seconds:
                    continue
                ended = False
                if state is not None and str(state).startswith("idle in transaction"):
                    ended = self._end(conn, int(pid), since)
                found.append(ChainLockHolder(int(pid), state, float(seconds), ended))
        for holder in found:
            if holder.ended:
                log.error(
                    "ended a database session that held the audit chain's lock idle in a transaction, keeping every"
                    " audited call out: someone with the serving role's credentials (or a client of it that hung)."
                    " Report it to the security team (docs/threat-model.md, serving role)",
                    extra={"pid": holder.pid, "state": holder.state, "seconds": round(holder.seconds, 1)},
                )
            else:
                log.warning(
                    "a database session holds the audit chain's lock and was not ended (active, or of a role this"
                    " one may not signal): audited calls fail until it lets go. Look it up in pg_stat_activity",
                    extra={"pid": holder.pid, "state": holder.state, "seconds": round(holder.seconds, 1)},
                )
        return found

    @staticmethod
    def _end(conn: psycopg.Connection[tuple[object, ...]], pid: int, since: object) -> bool:
        try:
            row = conn.execute(_END_IF_STILL_IDLE, (pid, since)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False
        return bool(row and row[0])
