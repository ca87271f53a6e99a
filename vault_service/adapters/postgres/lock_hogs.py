"""Sessions holding a large share of PostgreSQL's shared lock table, ended (attack 29, F1/F2).

The rule, its figures and what it leaves: docs/threat-model.md. The vault runs it for its serving role's logins
(migration 0047, from chain_lock.ChainLockWatch); the operators' watchdog runs it for every login
(migration 0048, vault_service.entrypoints.lock_watchdog).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from vault_service.adapters.postgres.keys import KEY_JOB_SESSIONS
from vault_service.adapters.postgres.process_sessions import PROCESS_SESSIONS

log = logging.getLogger(__name__)

HOG_LOCKS = 256
"""Lock-table entries a session may hold (migrations 0047 and 0048 fix the same figure): the vault's busiest session
holds a few dozen (22 measured on 100-item batches, attack 29; a key job and a 2,000-value Tokenize:
tests/integration/test_lock_hogs_ended.py), the ETL's loader 20-21 (tests/integration/test_lock_watchdog.py). With
max_locks_per_transaction 512 (deploy/postgres/tokenvault.conf) the table holds about 100,000, so 100 sessions of
256 each leave it far from full."""


@dataclass(frozen=True)
class HogRule:
    """Which migration's function a LockHogWatch calls, and how its log lines name whose sessions it ends."""

    statement: str
    """Its call: pid, entries, ended per session found; `%(spare)s` (a pg array text) if it spares pids."""
    function: str
    """The function's signature, as to_regprocedure takes it."""
    migration: str
    """The migration that makes it (named when it is missing)."""
    whose: str
    """Whose sessions it ends, for its log lines."""
    spares: bool = True
    """Whether it takes this process's sessions to spare."""


SERVING_ROLE_HOGS = HogRule(
    statement=(
        "SELECT h.pid, h.locks, h.ended FROM vault.end_lock_hogs(%(spare)s::pg_catalog.text::pg_catalog.int4[]) h"
    ),
    function="vault.end_lock_hogs(integer[])",
    migration="0047",
    whose="Someone with the serving role's credentials",
)
"""The vault's rule (migration 0047): every session of a login of the role holding more than HOG_LOCKS lock-table
entries, but `spare`, ended. Reads no relation."""

ANY_LOGIN_HOGS = HogRule(
    statement="SELECT h.pid, h.locks, h.ended FROM watchdog.end_lock_hogs() h",
    function="watchdog.end_lock_hogs()",
    migration="0048",
    whose="Someone with a database login's credentials (the ETL's, an analyst's, the serving role's)",
    spares=False,
)
"""The operators' watchdog's rule (migration 0048): every client session of any login but a superuser, the owner's
members and the caller holding more than HOG_LOCKS entries, ended. Reads no relation."""


@dataclass(frozen=True)
class LockHog:
    """A session found holding more than HOG_LOCKS entries of the lock table: pid, entries, whether ended."""

    pid: int
    locks: int
    ended: bool
    gone: bool = False
    """Not ended because it was no longer there: it had ended or was exiting when the rule signalled it."""


_GONE = re.compile(r"PID (\d+) is not a PostgreSQL backend process")
"""pg_terminate_backend()'s WARNING (and `false`) for a pid no longer a backend; it refuses a session it may not end
with an error instead (insufficient_privilege, which the migrations' functions turn into `ended` false)."""


MISSING_LOOK_SECONDS = 30.0
"""How often the lock-hog rule looks for its migration's function while it is missing (a schema before it)."""


class LockHogWatch:
    """Ends sessions holding more than HOG_LOCKS lock-table entries (attack 29, F1): the serving role's by default.

    A table full of one session's locks fails every other session's next lock that is not fast-path - every
    write's XID lock, a new connection - so the rule runs on a connection of its own, opened (by `connect`) and
    warmed at its first look, long before any fill, and kept: a new connection, or one of the pool's, is refused
    on a full table. Its statement reads no relation (pg_lock_status(), pg_stat_get_activity()) and is prepared,
    and the migration's function is PL/pgSQL, its plans and the role lookups cached by every look: so it runs, and
    ends the hog, while the table is full (measured). Never a session of this process (`own_sessions`,
    `own_key_sessions`; a `rule` that spares none: never the caller's), never this connection's. One log line per
    session ended: pid and entries, nothing else. `rule`: SERVING_ROLE_HOGS (the vault's) or ANY_LOGIN_HOGS (the
    operators' watchdog, vault_service.entrypoints.lock_watchdog).
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[tuple[object, ...]]],
        own_sessions: Callable[[], frozenset[tuple[int, datetime | None]]] = PROCESS_SESSIONS.sessions,
        own_key_sessions: Callable[[], frozenset[int]] = KEY_JOB_SESSIONS.pids,
        rule: HogRule = SERVING_ROLE_HOGS,
    ) -> None:
        self._connect = connect
        self._own_sessions = own_sessions
        self._own_key_sessions = own_key_sessions
        self.rule = rule
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.missing = False
        """The rule's migration is not applied: the rule is off (said once)."""
        self._look_again_at = 0.0
        """While it is missing: when to connect and look for it again (not at every 0.25 s look: a login each)."""
        self._gone: set[int] = set()
        """The pids the server said were no longer backends during the current look (its WARNINGs)."""

    def _noticed(self, diagnostic: psycopg.errors.Diagnostic) -> None:
        found = _GONE.search(diagnostic.message_primary or "")
        if found:
            self._gone.add(int(found.group(1)))

    def _connection(self) -> psycopg.Connection[tuple[object, ...]] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self.missing and time.monotonic() < self._look_again_at:
            return None
        conn = self._connect()
        try:
            conn.autocommit = True
            conn.add_notice_handler(self._noticed)
            PROCESS_SESSIONS.note(conn)  # this process's: no other rule of the watch ends it
            row = conn.execute(
                "SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL", (self.rule.function,), prepare=False
            ).fetchone()
            missing = not (row and row[0])
            if missing and not self.missing:
                log.warning(
                    f"migration {self.rule.migration} is not applied: sessions filling PostgreSQL's lock table are"
                    f" not ended by {self.rule.function} (docs/threat-model.md, attack 29)"
                )
            self.missing = missing
            if missing:
                self._look_again_at = time.monotonic() + MISSING_LOOK_SECONDS
                conn.close()
                return None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def connection(self) -> psycopg.Connection[tuple[object, ...]] | None:
        """Its warm connection (opened if needed); None while the rule's migration is missing."""
        return self._connection()

    def forget_connection(self) -> None:
        """Drop its connection after another statement on it found it broken: opened again at the next look."""
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            self._conn = None

    def end_lock_hogs(self) -> list[LockHog]:
        """Each other session found holding more than HOG_LOCKS entries, ended (the rule's); logged."""
        conn = self._connection()
        if conn is None:
            return []
        params: dict[str, str] = {}
        if self.rule.spares:
            spare = {pid for pid, _ in self._own_sessions()} | set(self._own_key_sessions())
            params["spare"] = "{" + ",".join(str(p) for p in sorted(spare)) + "}"
        self._gone.clear()
        try:
            rows = conn.execute(self.rule.statement, params or None, prepare=True).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            # The login lost its rights under a live connection: Vault's revocation at a lease's end drops the role
            # and leaves its sessions, each refused from then on. Closed, so that the next look logs in again - from
            # a DSN file, as the login rendered since (review 36, R36-3: the watchdog failed every look for ever).
            conn.close()
            self._conn = None
            raise
        except BaseException:
            if conn.broken or conn.closed:
                self._conn = None
            raise
        hogs = [
            LockHog(int(str(r[0])), int(str(r[1])), bool(r[2]), not r[2] and int(str(r[0])) in self._gone) for r in rows
        ]
        for hog in hogs:
            extra = {"pid": hog.pid, "locks": hog.locks}
            if hog.ended:
                log.error(
                    f"ended a database session that held {hog.locks} entries of PostgreSQL's lock table (more than"
                    f" {HOG_LOCKS}; the vault's and the ETL's own hold a few dozen): filling it fails every call of the"
                    " vault."
                    f" {self.rule.whose}. Report it to the security team (docs/threat-model.md, attack 29)",
                    extra=extra,
                )
            elif hog.gone:
                log.info(
                    f"a database session that held {hog.locks} entries of PostgreSQL's lock table was already gone or"
                    " exiting when it was to be ended (it disconnected, or its exit clean-up held them): nothing to"
                    " end",
                    extra=extra,
                )
            else:
                log.warning(
                    f"a database session holds {hog.locks} entries of PostgreSQL's lock table and the server refused"
                    f" to end it: the owner of {self.rule.function} lacks pg_signal_backend (migration 0042), or it is"
                    " a superuser's. Look it up in pg_stat_activity",
                    extra=extra,
                )
        return hogs

    def close(self) -> None:
        """Close the rule's connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
