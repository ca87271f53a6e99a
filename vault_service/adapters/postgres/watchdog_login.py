"""The operators' lock watchdog's login (migration 0048): its connection, its start check and its looks.

Every psycopg error becomes a named error here (STYLE 11; review 34, R34-8): Misconfigured (stop, saying what to
fix), DatabaseDown (an outage at the start: tried again), LookFailed (a look's connection lost or timed out: tried
again at the next look), RuleMissing (0048's function gone after the start). The entrypoint
(vault_service.entrypoints.lock_watchdog) maps those kinds to exit codes, log lines and metrics, and never imports
psycopg.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tokenvault_common.database_dsn import Conninfo, DsnFileError, conninfo_now
from vault_service.adapters.postgres.lock_hogs import ANY_LOGIN_HOGS, LockHog, LockHogWatch
from vault_service.adapters.postgres.old_transactions import (
    MAX_TRANSACTION_SECONDS,
    OldTransaction,
    OldTransactionWatch,
)
from vault_service.adapters.postgres.vault_sessions import VaultSessionEnded, VaultSessionWatch
from vault_service.adapters.postgres.watchdog_rule import WatchdogRule
from vault_service.adapters.postgres.watchdog_slots import OwnLoginSlots

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
"""How long a (re)connection may take before the look fails and is tried again."""
STATEMENT_TIMEOUT_MS = 5000
"""A look's bound on the server (its connection's statement_timeout, set at log-in: it takes no lock-table entry,
so a look still runs on a full table; the function itself takes milliseconds)."""
KEEPALIVE_IDLE_SECONDS = 5
"""TCP keepalives on its connection (then every 2 s, 3 unanswered: dead): a connection whose server is gone (a
failover, a partition: a half-open TCP connection) is found dead in about 11 s while it waits for a reply, instead of
the kernel's ~15 minutes."""
TCP_USER_TIMEOUT_MS = 10000
"""A look sent and never acknowledged (the server's host gone) fails after 10 s."""
_LOGIN_REFUSED = re.compile(
    r"password authentication failed|authentication failed for user|role \"[^\"]*\" does not exist"
    r"|database \"[^\"]*\" does not exist|pg_hba\.conf|no password supplied|is not permitted to log in"
    r"|permission denied for database|authentication method requirement|certificate verify failed"
    r"|server does not support SSL|invalid connection option|invalid sslmode|invalid dsn|missing \"=\"",
    re.IGNORECASE,
)
"""libpq's words for a login the server (or libpq) refuses whatever the database's state: a misconfiguration.
(A failed connection carries no SQLSTATE in psycopg; a refusal after the start carries class 28 / 3D000.)"""

_REACH = """
SELECT p.oid IS NOT NULL,
       p.oid IS NOT NULL AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE'),
       pg_catalog.pg_has_role(p.proowner, 'pg_read_all_stats', 'USAGE'),
       pg_catalog.pg_has_role(p.proowner, 'pg_signal_backend', 'USAGE')
FROM (SELECT pg_catalog.to_regprocedure('watchdog.end_lock_hogs()') AS f) x
LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) x.f
"""
"""Whether migration 0048's function is there, this login may run it, and its owner may see and end sessions."""

NOT_A_MEMBER = (
    "the login of TOKENVAULT_WATCHDOG_DSN may not run watchdog.end_lock_hogs(): make it a login IN ROLE"
    " tokenvault_watchdog (docs/production.md)"
)


NOTIFY_QUEUE_BOUND = 0.001
"""The NOTIFY queue's share of its maximum (pg_notification_queue_usage(); 8 GB on PostgreSQL 15: 0.001 is 1,049
pages, ~8.4 MB in $PGDATA/pg_notify) past which the sessions that may hold its tail are ended (review 35, R35-1):
the default of watchdog.rule_bounds (migration 0060), where the bound lives - the server's, not this process's
(attack 32, F10: a caller's bound let the watchdog's login end any session). The vault and the ETL never LISTEN nor
NOTIFY, so nothing of theirs is in the queue; a listener that reads keeps it at a few pages (a backend reads its
notifications between transactions, and the tail is cut every 4 pages), so 1,049 pages means a listener held in a
transaction (or whose client does not read its socket) while someone sends. Small beside the data disk's headroom:
at the 230 MB/s measured (review 35) the queue reaches ~70 MB before a look (0.25 s) sees it and the next ends the
holder; the disk must keep that free (docs/production.md)."""

_END_QUEUE_HOLDER = (
    "SELECT h.usage, h.bound, h.wanted, h.pid, h.login, h.ended, h.ended_so_far"
    " FROM watchdog.end_notify_queue_holder() h"
)


@dataclass(frozen=True)
class QueueHolder:
    """A session ended (or that the server refused to end) as a possible holder of the NOTIFY queue's tail."""

    pid: int
    login: str
    ended: bool
    usage: float
    """The queue's usage when it was ended (a share of its maximum)."""
    ended_so_far: int
    """Sessions ended since the queue passed the bound, this one included."""


class NotifyQueueWatch:
    """Ends the sessions that may hold the NOTIFY queue's tail while the queue grows past its bound.

    Migration 0060's watchdog.end_notify_queue_holder() (its candidates and order: 0054, 0056) on the watchdog's warm
    connection, once per look. The rule and its state are the server's, none of them passed by this process (attack
    32, F10: the watchdog's login is an insider too; with a bound and an anchor of the caller's it ended any session
    in a transaction on demand): the bound, the rise and the shortest time between two ends in watchdog.rule_bounds
    (the owner's), the anchor and the lowest usage since the last end in watchdog.notify_queue_looks, one row per
    calling session (migration 0062: no other session - another of this login's - can lock, reset or forge this
    watchdog's; attack 33, A1).

    The rule: a look that first sees the usage over the bound notes the server's time (the anchor); each later look
    while it is over and still grows (0.2 s or more after the anchor or the last end) ends one session in a
    transaction: other logins' (analysts', and this login's own) first, then the ETL's, oldest transaction first
    within each, whenever it began; the vault's last (migration 0063; attack 33, A5: one pod's login must not reach
    another pod's key job): never one holding a key job's or the key-generation lock (the vault's lock functions
    refuse a session that LISTENs, so such a session cannot hold the tail), the others youngest transaction first,
    and only those begun before the server's previous look and 0.2 s ago. No SQL lists who LISTENs, but every
    session that can hold the tail is in a transaction (its own, or the one in which its backend sends its
    notifications to a client that does not read them). Why whenever they began (attack 32, F1): the tail moves to
    the next listener once its holder is ended, and one that began holding after the crossing is already past the
    bound behind the head. The vault never LISTENs, so its calls begun since the last look are left.

    The next end comes only once the usage has risen 8 pages above its lowest since the last end (seen by the
    server's looks): the tail moves only when a notifier writes (every 4 pages) and its holder is gone, so a rise of
    more than 4 pages past that low means it moved and is still held. Under the bound again, it starts over.
    """

    def __init__(self, login: LockHogWatch) -> None:
        self.bound = NOTIFY_QUEUE_BOUND
        """The server's bound, as its last look read it."""
        self.usage = 0.0
        """The usage its last look read."""
        self.passed = False
        """The last look saw the usage over the bound."""
        self.ended_so_far = 0
        self._said_none = False
        self.state_not_taken = 0
        """Looks whose function could not take this session's own state (migration 0062's guard): counted."""
        self._said_not_taken = False
        self._rule = WatchdogRule(
            login,
            _END_QUEUE_HOLDER,
            ("end_notify_queue_holder",),
            "migration 0060 is not applied: sessions holding the NOTIFY queue's tail while it fills the data"
            " disk are not ended by watchdog.end_notify_queue_holder() (docs/threat-model.md, review 35)",
        )

    @property
    def missing(self) -> bool:
        """Migration 0060's function is not there: this rule is off (said once, looked for again every 30 s)."""
        return self._rule.missing

    def look(self) -> list[QueueHolder]:
        """The rule once: the session it ended (or was refused), if any; logged."""
        rows = self._rule.rows()
        if not rows:
            return []
        usage, bound, wanted, pid, login, ended, ended_so_far = rows[0]
        self.usage = float(str(usage))
        self.bound = float(str(bound))
        if wanted is None:  # 0062: the function could not take this session's own state: this look ended nothing
            self.state_not_taken += 1
            if not self._said_not_taken:
                log.error(
                    "the NOTIFY rule could not take this watchdog's own state on the server: its looks end nothing"
                    " while that lasts. Its state is kept per session (migration 0062) and no other session should"
                    " hold it: look in pg_locks for who holds a lock on watchdog.notify_queue_looks, and report it to"
                    " the security team (docs/threat-model.md, attack 33)",
                    extra={"usage": self.usage},
                )
                self._said_not_taken = True
            return []
        if self.usage <= self.bound:
            if self.passed:
                log.info(
                    "the NOTIFY queue is under its bound again",
                    extra={"usage": self.usage, "sessions_ended": self.ended_so_far},
                )
            self.passed, self.ended_so_far, self._said_none, self._said_not_taken = False, 0, False, False
            return []
        self.passed = True
        if pid is None:
            if wanted and not self._said_none:
                log.warning(
                    "the NOTIFY queue grows past its bound and no session the rule may end is in a transaction (a"
                    " superuser's or the owner's members' holds its tail?): find who LISTENs in a transaction, or"
                    " whose backend waits on ClientWrite, in pg_stat_activity (docs/threat-model.md, review 35)",
                    extra={"usage": self.usage},
                )
                self._said_none = True
            return []
        self.ended_so_far = int(str(ended_so_far))
        holder = QueueHolder(int(str(pid)), str(login), bool(ended), self.usage, self.ended_so_far)
        extra = {"pid": holder.pid, "login": holder.login, "usage": holder.usage, "sessions_ended": holder.ended_so_far}
        if holder.ended:
            log.error(
                "ended a database session in a transaction while the NOTIFY queue grows past its bound: the queue is"
                f" past {self.bound:.2%} of its maximum (8 GB on PostgreSQL 15, in pg_notify on the data disk) and"
                " grows; a listener held in a transaction (or not reading its socket) keeps it from being cut, and a"
                " full data disk fails the ETL's writes and restarts the server. The vault and the ETL never LISTEN"
                " nor NOTIFY. Report it to the security"
                " team (docs/threat-model.md, review 35)",
                extra=extra,
            )
        else:
            log.warning(
                "a database session in a transaction while the NOTIFY queue grows past its bound was to be ended and"
                " the server refused: the owner of watchdog.end_notify_queue_holder() lacks pg_signal_backend"
                " (migration 0042). Look it up in pg_stat_activity",
                extra=extra,
            )
        return [holder]


class Misconfigured(Exception):
    """The watchdog cannot do its work as configured; the message says what to fix."""


class DatabaseDown(Exception):
    """The database cannot be reached (down, failing over, starting): an outage, tried again.

    `cause`: the driver error's class name; the message: its text (libpq's; never the DSN).
    """

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class LookFailed(Exception):
    """A look failed: its connection lost, refused or timed out (opened again at the next look). `cause`: as above."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class RuleMissing(Exception):
    """Migration 0048's function is gone from the database (a rollback, a restore): a look that watched nothing."""


def login_refused(error: psycopg.OperationalError) -> bool:
    """Whether `error` is the login refused: a misconfiguration.

    A bad password, no such role or database, not allowed to connect, TLS or the DSN wrong. Otherwise (a refused
    connection, DNS, a timeout, the server starting, shutting down or out of connection slots) the database is down
    for now: an outage, tried again.
    """
    state = error.sqlstate
    if state is not None:
        return state.startswith("28") or state in ("3D000", "42501")
    return _LOGIN_REFUSED.search(str(error)) is not None


class WatchdogLogin:
    """A login IN ROLE tokenvault_watchdog running migration 0048's rule on one warm connection (LockHogWatch).

    `dsn`: the DSN, or a callable giving it at each (re)connection (a DSN file that rotates: DsnFileError from it).
    `max_transaction_seconds`: migration 0057's bound on analysts' and the ETL's transactions (OldTransactionWatch).
    `vault_sessions`: migration 0059's budget of the serving role's members' sessions (VaultSessionWatch; 0: the
    role's CONNECTION LIMIT).
    """

    def __init__(
        self, dsn: Conninfo, max_transaction_seconds: float = MAX_TRANSACTION_SECONDS, vault_sessions: int = 0
    ) -> None:
        self._dsn = dsn
        self.slots = OwnLoginSlots(self.connect)
        self.watch = LockHogWatch(self._warm_connection, rule=ANY_LOGIN_HOGS)
        self.notify_queue = NotifyQueueWatch(self.watch)
        self.old_transactions = OldTransactionWatch(self.watch, max_transaction_seconds)
        self.vault_sessions = VaultSessionWatch(self.watch, vault_sessions)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """Its connection: every wait bounded (connect, statement, a dead peer), so a look fails and is tried again."""
        dsn = conninfo_now(self._dsn)
        options = conninfo_to_dict(dsn).get("options") or ""
        return psycopg.connect(
            dsn,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=True,
            options=f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip(),
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_SECONDS,
            keepalives_interval=2,
            keepalives_count=3,
        )

    def _warm_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        """The rules' connection: a spare of its own login's slots if one is open (taken before anyone else can)."""
        return self.slots.spare() or self.connect()

    def check(self) -> None:
        """Log in once and check the rule can run.

        Misconfigured saying which migration or grant is missing, or that the server refuses the login (or its DSN
        file cannot be used); DatabaseDown if the database cannot be reached (an outage).
        """
        try:
            with self.connect() as conn:
                row = conn.execute(_REACH).fetchone()
        except psycopg.errors.InsufficientPrivilege:  # no USAGE on schema watchdog: not a member
            raise Misconfigured(NOT_A_MEMBER) from None
        except DsnFileError as error:
            raise Misconfigured(str(error)) from None
        except psycopg.OperationalError as error:
            if login_refused(error):
                refused = f"the server refuses the login of TOKENVAULT_WATCHDOG_DSN: {str(error).strip()}"
                raise Misconfigured(refused) from None
            raise DatabaseDown(str(error).strip(), type(error).__name__) from None
        there, may, sees, signals = (bool(v) for v in row) if row else (False, False, False, False)
        if not there:
            raise Misconfigured(
                "watchdog.end_lock_hogs() is not in the database: apply migration 0048"
                " (migrations/0048_lock_hogs_of_every_login_ended_by_a_watchdog.sql)"
            )
        if not may:
            raise Misconfigured(NOT_A_MEMBER)
        if not (sees and signals):
            raise Misconfigured(
                "the owner of watchdog.end_lock_hogs() (tokenvault_owner) lacks pg_read_all_stats or"
                " pg_signal_backend (migration 0042): grant them or the provider's equivalent (docs/production.md)"
            )

    def look(self) -> list[LockHog]:
        """The rule once: each session found (ended or not; each logged by the rule).

        RuleMissing if migration 0048's function is gone; LookFailed if its connection was lost, refused or timed
        out; DsnFileError if its DSN file cannot be used for a (re)connection.
        """
        try:
            hogs = self.watch.end_lock_hogs()
        except (psycopg.Error, OSError) as error:
            raise LookFailed(str(error).strip(), type(error).__name__) from None
        if self.watch.missing:
            raise RuleMissing(
                "watchdog.end_lock_hogs() is no longer in the database: nothing is watched until migration 0048 is"
                " applied again (migrations/0048_lock_hogs_of_every_login_ended_by_a_watchdog.sql)"
            )
        return hogs

    def hold_own_login(self) -> list[int]:
        """Every slot of its login held, and its sessions not this watchdog's ended (OwnLoginSlots): their pids.

        LookFailed if its connection was lost, refused or timed out; DsnFileError as `look`.
        """
        conn = self.watch.connection()
        if conn is None:
            return []
        try:
            return self.slots.hold(conn)
        except (psycopg.Error, OSError) as error:
            self.watch.forget_connection()
            raise LookFailed(str(error).strip(), type(error).__name__) from None

    def look_at_notify_queue(self) -> list[QueueHolder]:
        """Migration 0053's rule once (NotifyQueueWatch): the session ended, if any (logged by the rule).

        LookFailed if its connection was lost, refused or timed out; DsnFileError as `look`.
        """
        try:
            return self.notify_queue.look()
        except (psycopg.Error, OSError) as error:
            raise LookFailed(str(error).strip(), type(error).__name__) from None

    def look_at_old_transactions(self) -> list[OldTransaction]:
        """Migration 0057's rule once (OldTransactionWatch): the sessions ended, if any (each logged by the rule).

        LookFailed if its connection was lost, refused or timed out; DsnFileError as `look`.
        """
        try:
            return self.old_transactions.look()
        except (psycopg.Error, OSError) as error:
            raise LookFailed(str(error).strip(), type(error).__name__) from None

    def look_at_vault_sessions(self) -> list[VaultSessionEnded]:
        """Migration 0059's rule once (VaultSessionWatch): the sessions ended, if any (each logged by the rule).

        LookFailed if its connection was lost, refused or timed out; DsnFileError as `look`.
        """
        try:
            return self.vault_sessions.look()
        except (psycopg.Error, OSError) as error:
            raise LookFailed(str(error).strip(), type(error).__name__) from None

    def close(self) -> None:
        """Close its connections."""
        self.watch.close()
        self.slots.close()
