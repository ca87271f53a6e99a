"""Whether migration 0045's lock functions are in the database: how the vault takes its advisory locks.

From migration 0045 the serving role takes the vault's advisory locks - the key-generation lock, a key job's
hold - only through the owner's functions (`vault.lock_key_generation_shared()` ...): every `pg_catalog` advisory
function is revoked from it, so that one transaction cannot fill the server's lock table (attack 27, F9). Before
0045 it takes them with `pg_catalog`'s. The vault service of a release works on the schema before that release's
migrations (docs/production.md): key operations (rare) ask which form to use each time (`present`); the token
store (every new token) asks once, and again when a statement of the pre-0045 form is refused - the migration ran
meanwhile: that call fails UNAVAILABLE, asking for a retry, and the next one uses the functions (`LockFunctions`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vault_service.domain.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

_PRESENT = "SELECT pg_catalog.to_regprocedure('vault.lock_audit_chain()') IS NOT NULL"

MIGRATED_MEANWHILE = (
    "the database's migration 0045 was applied while this call ran: the vault now takes its locks through the"
    " database's lock functions; nothing was stored, retry"
)
"""DatabaseUnavailable's message for the one call refused in the switch (names no data)."""


def present(conn: psycopg.Connection) -> bool:
    """Whether migration 0045's lock functions are in `conn`'s database."""
    row = conn.execute(_PRESENT).fetchone()
    return bool(row and row[0])


class LockFunctions:
    """Which form of the vault's advisory-lock statements one store uses: migration 0045's functions, or before it."""

    def __init__(self) -> None:
        self._present: bool | None = None
        self._told = False

    def present(self, conn: psycopg.Connection) -> bool:
        """Whether migration 0045's functions are there (asked on `conn` once, and again after a refusal)."""
        if self._present is None:
            self._present = present(conn)
            if not self._present and not self._told:
                self._told = True
                log.error(
                    "migration 0045 is not applied: the serving role still takes advisory locks with pg_catalog's"
                    " functions, and one session of it can fill the server's lock table; apply the database"
                    " migrations"
                )
        return self._present

    @contextmanager
    def switched_when_migrated(self) -> Iterator[None]:
        """A pre-0045 statement refused for want of privilege: 0045 ran meanwhile; DatabaseUnavailable, ask again."""
        try:
            yield
        except psycopg.errors.InsufficientPrivilege:
            if self._present is not False:
                raise
            self._present = None
            raise DatabaseUnavailable(MIGRATED_MEANWHILE) from None
