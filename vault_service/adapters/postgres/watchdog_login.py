"""The operators' lock watchdog's login (migration 0048): its connection, its start check and its looks.

Every psycopg error becomes a named error here (STYLE 11; review 34, R34-8): Misconfigured (stop, saying what to
fix), DatabaseDown (an outage at the start: tried again), LookFailed (a look's connection lost or timed out: tried
again at the next look), RuleMissing (0048's function gone after the start). The entrypoint
(vault_service.entrypoints.lock_watchdog) maps those kinds to exit codes, log lines and metrics, and never imports
psycopg.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tokenvault_common.database_dsn import Conninfo, DsnFileError, conninfo_now
from tokenvault_common.pg_options import startup_options
from vault_service.adapters.postgres.lock_hogs import ANY_LOGIN_HOGS, LockHog, LockHogWatch
from vault_service.adapters.postgres.notify_queue import NotifyQueueWatch, QueueHolder
from vault_service.adapters.postgres.old_transactions import (
    MAX_TRANSACTION_SECONDS,
    OldTransaction,
    OldTransactionWatch,
)
from vault_service.adapters.postgres.session_settings import (
    SessionSettingsReport,
    defaults_set_for_session,
)
from vault_service.adapters.postgres.vault_sessions import VaultSessionEnded, VaultSessionWatch
from vault_service.adapters.postgres.watchdog_slots import OwnLoginSlots

_Found = TypeVar("_Found")

CONNECT_TIMEOUT_SECONDS = 5
"""How long a (re)connection may take before the look fails and is tried again."""
STATEMENT_TIMEOUT_MS = 5000
"""A look's bound on the server (its connection's statement_timeout, set at log-in: it takes no lock-table entry,
so a look still runs on a full table; the function itself takes milliseconds)."""
WATCHDOG_SESSION_SETTINGS: dict[str, str] = {
    "role": "none",
    "default_transaction_read_only": "off",
    "default_transaction_isolation": "read committed",
    "statement_timeout": f"{STATEMENT_TIMEOUT_MS // 1000}s",
    "lock_timeout": f"{STATEMENT_TIMEOUT_MS // 1000}s",
    "idle_session_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "search_path": "pg_catalog, pg_temp",
    "client_min_messages": "warning",
    "client_encoding": "UTF8",
    "local_preload_libraries": "",
}
"""What every connection of the watchdog (its warm one and its spares) starts with, as `current_setting` shows it.

Any login may set defaults for its own later sessions (`ALTER ROLE CURRENT_USER SET ...`, pg_db_role_setting), and a
copy of the watchdog's credentials needs one session, once, to do it (attack 35, N7): `default_transaction_read_only
= on` made every look fail (the NOTIFY rule writes its state), across restarts; `role = tokenvault_watchdog` (a group
it is in) made `current_user` the group, whose CONNECTION LIMIT is none, so no spare was opened and a copy took the
login's slots again (N7b, attack 33 A4 back). Settings given at connection start (libpq's `options`) take precedence
over role and database defaults, so each setting its looks depend on is pinned there: no role but its login, writes
allowed, read committed, bounded statement and lock waits (a lock wait no longer than a statement's, as before),
no idle timeout (one ending its idle spares would free their slots for a copy), catalog names first, and the
server's WARNINGs (lock_hogs reads "is not a PostgreSQL backend process" from them), text as UTF8 (attack 38, M1:
`client_encoding = 'SQL_ASCII'` makes psycopg read text as bytes; its looks held under it, pinned so that none ever
compares bytes) and no library loaded at the session's start (attack 38, M2: `local_preload_libraries` naming a
library that is not there ended every session at its start, and the watchdog retried as if the database were down,
watching nothing). PostgreSQL 17's
transaction_timeout, unknown to a startup packet of older servers, is set to 0 just after connecting
(`_TRANSACTION_TIMEOUT_OFF`). Defaults set on its login are reported at the start (`WatchdogLogin.defaults`)."""
_TRANSACTION_TIMEOUT_OFF = (
    "SELECT pg_catalog.set_config('transaction_timeout', '0', false)"
    " WHERE pg_catalog.current_setting('transaction_timeout', true) IS NOT NULL"
)
"""PostgreSQL 17+'s transaction_timeout off for the session (NULL, nothing set, before 17); reads no relation."""
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


def _named(look: Callable[[], _Found]) -> _Found:
    """`look()`, its connection's errors (psycopg's, the socket's) named LookFailed: tried again at the next look."""
    try:
        return look()
    except (psycopg.Error, OSError) as error:
        raise LookFailed(str(error).strip(), type(error).__name__) from None


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
        self.defaults: SessionSettingsReport | None = None
        """What role and database defaults set for its login's sessions, read at the start check (`check`): those of
        pinned settings are overridden by WATCHDOG_SESSION_SETTINGS; the others are in effect (attack 35, N7)."""

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """Its connection: every wait bounded (connect, statement, a dead peer), so a look fails and is tried again."""
        dsn = conninfo_now(self._dsn)
        options = conninfo_to_dict(dsn).get("options") or ""
        conn = psycopg.connect(
            dsn,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=True,
            options=f"{options} {startup_options(WATCHDOG_SESSION_SETTINGS)}".strip(),  # last: they win (N7)
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_SECONDS,
            keepalives_interval=2,
            keepalives_count=3,
        )
        if conn.info.server_version >= 170000:
            try:
                conn.execute(_TRANSACTION_TIMEOUT_OFF)
            except BaseException:
                conn.close()
                raise
        return conn

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
                self.defaults = defaults_set_for_session(conn, WATCHDOG_SESSION_SETTINGS)
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
        hogs = _named(self.watch.end_lock_hogs)
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
        return _named(self.notify_queue.look)

    def look_at_old_transactions(self) -> list[OldTransaction]:
        """Migration 0057's rule once (OldTransactionWatch): the sessions ended, if any (each logged by the rule).

        LookFailed if its connection was lost, refused or timed out; DsnFileError as `look`.
        """
        return _named(self.old_transactions.look)

    def look_at_vault_sessions(self) -> list[VaultSessionEnded]:
        """Migration 0059's rule once (VaultSessionWatch): the sessions ended, if any (each logged by the rule).

        LookFailed if its connection was lost, refused or timed out; DsnFileError as `look`.
        """
        return _named(self.vault_sessions.look)

    def close(self) -> None:
        """Close its connections."""
        self.watch.close()
        self.slots.close()
