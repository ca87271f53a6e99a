"""One rule's SQL function of the lock watchdog, run on its warm connection: or said once to be missing.

Every rule after the lock-hog rule (migrations 0053-0061: the NOTIFY queue, old transactions, the vault members'
budget) is an owner function the watchdog's login may execute. A release's watchdog may run before the migration that
makes (or reshapes) its function: the rule is then off, said once as a WARNING, and looked for again every
MISSING_LOOK_SECONDS, while the other rules go on. Any other error of the statement is a failed look (its connection
forgotten when broken, opened again at the next look).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from vault_service.adapters.postgres.lock_hogs import MISSING_LOOK_SECONDS, LockHogWatch

log = logging.getLogger(__name__)

_MISSING = (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedColumn)
"""The function, or a column of the shape this release reads, not there: its migration is not applied."""


class WatchdogRule:
    """`statement` (naming one of `names`: the function and the columns only its migration makes), run by `rows()`.

    `missing_warning`: what is said once while the migration is not applied (which rule is off, and why it matters).
    """

    def __init__(self, login: LockHogWatch, statement: str, names: tuple[str, ...], missing_warning: str) -> None:
        self._login = login
        self._statement = statement
        self._names = names
        self._missing_warning = missing_warning
        self.missing = False
        """Its migration is not applied: the rule is off (said once, looked for again every MISSING_LOOK_SECONDS)."""
        self._look_again_at = 0.0

    def connection(self) -> psycopg.Connection[tuple[object, ...]] | None:
        """The watchdog's warm connection (None while migration 0048 is missing: no rule runs)."""
        return self._login.connection()

    def rows(self, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]] | None:
        """The statement's rows; None when it did not run.

        Not run: no connection, the migration missing, or the lock table full (PostgreSQL's "out of shared memory",
        the lock-hog rule's case: the next look runs it again).
        """
        if self.missing and time.monotonic() < self._look_again_at:
            return None
        conn = self._login.connection()
        if conn is None:
            return None
        try:
            rows = conn.execute(self._statement, params, prepare=True).fetchall()
        except _MISSING as error:
            if not any(name in str(error) for name in self._names):  # another object missing: a failed look
                self._login.forget_connection()
                raise
            if not self.missing:
                log.warning(self._missing_warning)
            self.missing = True
            self._look_again_at = time.monotonic() + MISSING_LOOK_SECONDS
            return None
        except psycopg.errors.OutOfMemory:
            return None
        except BaseException:
            self._login.forget_connection()
            raise
        self.missing = False
        return rows
