"""The lock watchdog holds every connection slot of its own login, and ends any session of that login not its own.

Attack 33, A4: PostgreSQL lets a role end its own backends without pg_signal_backend, so a copy of the watchdog's
credentials (a stolen pod credential) ended the real watchdog's session, took the login's free slots (its CONNECTION
LIMIT is 3) and kept them: the watchdog could never log in again, every rule was off, and an analyst's listener filled
the NOTIFY queue at ~210 MB/s with nothing ended; only a page ~2.5 minutes later. Now the watchdog, once its warm
connection is up, opens spares until the login's CONNECTION LIMIT is reached - a copy of its credentials then finds no
slot - and at each look ends every client session of its login that is not one of its own (one ERROR line each:
pid; counted). A lost warm connection is replaced from a spare at once, before anyone else can take the slot. One
watchdog per login: two processes sharing one would end each other's sessions (Kubernetes gives each pod its own).
A login with no CONNECTION LIMIT cannot be held: said once (docs/production.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

SPARE_CHECK_SECONDS = 1.0
"""How often its spare connections are asked whether they still live (a `SELECT 1` each)."""

_LIMIT = "SELECT r.rolconnlimit FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) session_user"
"""Its login's CONNECTION LIMIT: the session's login, whatever role it was set to (attack 35, N7b: a default role of
the group tokenvault_watchdog read the group's limit, none, and no spare was opened)."""
_END_STRANGERS = (
    "SELECT a.pid, pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a"
    " WHERE a.usesysid = (SELECT m.usesysid FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) m)"
    " AND a.backend_type = 'client backend' AND a.pid <> ALL (%(mine)s::pg_catalog.int4[])"
)
"""Every client session of this login but this process's, ended. Reads no relation (pg_stat_get_activity only)."""

Connection = psycopg.Connection[tuple[object, ...]]


class OwnLoginSlots:
    """Spare connections of the watchdog's login, up to its CONNECTION LIMIT, and the sessions of it not its own.

    `connect`: opens one more connection of the login (the watchdog's, every wait bounded).
    """

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._spares: list[Connection] = []
        self._limit: int | None = None
        self._login: str | None = None
        """The login whose limit `_limit` is (the warm connection's at the look that read it)."""
        self._checked_at = 0.0
        self._said_unlimited = False
        self.strangers_ended = 0
        """Sessions of its login not its own that it has ended since it started."""

    def spare(self) -> Connection | None:
        """A live spare connection, taken out of the spares (the warm connection's replacement), if any."""
        while self._spares:
            conn = self._spares.pop()
            if not conn.closed and not conn.broken:
                return conn
        return None

    def hold(self, warm: Connection) -> list[int]:
        """At each look: end the sessions of its login not its own (their pids), then keep its spares up to the limit.

        Errors of the warm connection are the look's (raised); a spare that cannot be opened is tried at the next look.
        """
        mine = [warm.info.backend_pid, *(conn.info.backend_pid for conn in self._spares if not conn.closed)]
        rows = warm.execute(_END_STRANGERS, {"mine": mine}, prepare=True).fetchall()
        ended = [int(str(pid)) for pid, signalled in rows if signalled]
        for pid in ended:
            log.error(
                "ended a database session of this watchdog's own login that is not this watchdog's: a copy of its"
                " credentials is in use (it could end this watchdog's session and take its slots, and every rule would"
                " stop). Find where the login's credentials leaked and rotate them (docs/threat-model.md, attack 33)",
                extra={"pid": pid},
            )
        self.strangers_ended += len(ended)
        if self._limit is None or warm.info.user != self._login:
            # Its first look, or a login rotated (Kubernetes: the Vault agent renders a new one, R36-3): that login's
            # limit, and no spare of another login - which holds none of this one's slots (review 36, R36-8).
            row = warm.execute(_LIMIT).fetchone()
            self._limit = int(str(row[0])) if row and row[0] is not None else -1
            self._login = warm.info.user
            for conn in self._spares:
                if not conn.closed and conn.info.user != self._login:
                    conn.close()
            self._spares = [conn for conn in self._spares if not conn.closed]
        self._keep_spares()
        return ended

    def _keep_spares(self) -> None:
        if self._limit is not None and self._limit < 0:
            if not self._said_unlimited:
                log.warning(
                    "this watchdog's login has no CONNECTION LIMIT, so its slots cannot all be held: a copy of its"
                    " credentials may log in, end this watchdog's session and keep it out. Give the login a limit"
                    " (docs/production.md; the stack's logins have 3)"
                )
                self._said_unlimited = True
            return
        now = time.monotonic()
        if now - self._checked_at >= SPARE_CHECK_SECONDS:
            self._checked_at = now
            self._spares = [conn for conn in self._spares if _alive(conn)]
        while self._limit is not None and len(self._spares) < self._limit - 1:
            try:
                self._spares.append(self._connect())
            except psycopg.OperationalError:  # a slot someone else holds: ended at the next look, then taken
                return

    def close(self) -> None:
        """Close its spares."""
        for conn in self._spares:
            conn.close()
        self._spares = []


def _alive(conn: Connection) -> bool:
    if conn.closed or conn.broken:
        return False
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        conn.close()
        return False
    return True
