"""Driver errors become named port errors here, so psycopg never reaches the gRPC servicer."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from vault_service.domain.errors import DatabaseUnavailable, DatabaseUnreachable, StorageError, VaultError

log = logging.getLogger(__name__)

LOCK_NOT_FREE = (
    "a database lock the call needs (the audit chain's) is held by another session beyond its 2 s wait, so"
    " nothing was done; retry later. The vault ends a session of its own role holding it for seconds"
    " (docs/threat-model.md, serving role); if this lasts, look for the holder in pg_locks and pg_stat_activity"
)
"""DatabaseUnavailable's message for lock_not_available (55P03): actionable, and no row data (attack 26, F2)."""

KEY_ROW_NOT_FREE = (
    "a database lock the call needs (a data key's row in vault.data_keys, which a new token's insert locks FOR"
    " SHARE) is held by another session beyond its 2 s wait, so nothing was stored; retry later. The vault ends"
    " a session of its own role holding a key row locked for seconds (docs/threat-model.md, serving role); if"
    " this lasts, look for the holder in pg_locks (relation vault.data_keys) and pg_stat_activity"
)
"""The same when the wait that ran out is migration 0037's for the key rows a new token names (attack 27, F5)."""

BUDGET_ROW_NOT_FREE = (
    "this client's call budget (its rate limit's row, vault.call_budget) is held locked by another database"
    " session beyond its 2 s wait, so nothing was done; retry later. The vault's own calls hold it for"
    " milliseconds: if this lasts, look in pg_stat_activity for a session of the vault's role idle in a"
    " transaction (someone with the serving role's credentials) and end it"
)
"""DatabaseUnavailable's message when vault.take_call_budget waited out its lock_timeout (migration 0038)."""

ERASED_ROW_NOT_FREE = (
    "a database lock the erasure needs (a row of vault.tokens it erases, which another transaction - a key job's"
    " batch re-sealing or re-fingerprinting tokens, or another erasure of the same token - has changed and not yet"
    " committed) is held beyond its 2 s wait, so nothing was erased; retry later. The vault's key jobs hold a batch"
    " for moments (seconds for a batch of 100,000 rows); if this lasts, look for the holder in pg_locks (relation"
    " vault.tokens, or a transactionid) and pg_stat_activity"
)
"""The same when vault.erase_tokens waited out its lock_timeout (migration 0041, review 33 R33-3)."""

NEW_VALUE_NOT_FREE = (
    "a database lock a new token's insert needs (the same value being inserted by another transaction not yet"
    " committed: the unique check of vault.tokens waits for it) is held beyond its 2 s wait, so nothing was"
    " stored; retry later. The vault's own inserts commit in moments, and the vault ends a session of its own role"
    " keeping its sessions waiting for seconds (docs/threat-model.md, serving role); if this lasts, look for the"
    " holder in pg_locks (a transactionid) and pg_stat_activity"
)
"""The same when a token insert waited out its lock_timeout behind another's uncommitted insert (tokens.py, R33-3)."""

POLICY_OR_PRIVILEGE = (
    "the vault database refused the operation for lack of privilege (InsufficientPrivilege), so nothing was done:"
    " a row-level security policy on a table of the vault's (its sessions run with row_security = off, so a policy"
    " fails their statements instead of filtering what they read; no migration creates one) or a privilege taken"
    " from its role. Report it to the security team: `audit verify` names a policy"
)
"""StorageError's message for insufficient_privilege (42501): an owner's policy on a vault table, which a serving
session's statement meets since `row_security = off` is pinned (attack 46, A46-2), or a revoked privilege."""

_ROW_SECURITY_TABLE = re.compile(r'row-level security policy for table "([A-Za-z0-9_]{1,63})"')
"""The table PostgreSQL's (English) message names when `row_security = off` meets a policy; a name, never row data."""

_WAITS_BY_FUNCTION = {
    "tokens_under_live_keys": KEY_ROW_NOT_FREE,
    "audit_log_chain": LOCK_NOT_FREE,
    "take_call_budget": BUDGET_ROW_NOT_FREE,
    "erase_tokens": ERASED_ROW_NOT_FREE,
    'in relation "tokens"': NEW_VALUE_NOT_FREE,
}
"""Which lock a 55P03 names, by what its error context shows it ran out in: a function (a trigger, 0038's budget,
0041's erasure), or a token insert's unique check (PostgreSQL's context of a wait for another transaction's insert:
"while checking exclusion constraint on tuple ... in relation "tokens""). First match: the chain trigger's wait
inside an erasure names the chain's lock."""


def lock_not_free(error: psycopg.errors.LockNotAvailable) -> str:
    """The message naming the lock whose wait ran out (`_WAITS_BY_FUNCTION`; by default the chain's)."""
    context = error.diag.context or ""
    return next((message for function, message in _WAITS_BY_FUNCTION.items() if function in context), LOCK_NOT_FREE)


P = ParamSpec("P")
R = TypeVar("R")


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Run `method`, turning driver errors into port errors.

    No connection to be had within the pool's timeout (the server refuses or does not answer)
    becomes DatabaseUnreachable, a lost connection or an operational error DatabaseUnavailable,
    any other driver error StorageError; a lock not free within its timeout (the audit chain's,
    migration 0035; a key row's, 0037; a call budget's, 0038; a row an erasure erases, 0041; another insert of a
    new value, tokens.py) DatabaseUnavailable naming it
    (`lock_not_free`); a statement refused for lack of privilege (an owner's row-level security policy met by a
    session with `row_security = off`, attack 46) StorageError(POLICY_OR_PRIVILEGE), logged as such. The driver's
    message can quote row data: only its class and SQLSTATE (and a row-security error's table name) are logged.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except VaultError:
            raise
        except PoolTimeout:
            log.error("database unreachable", extra={"error": "PoolTimeout"})
            raise DatabaseUnreachable("the vault database cannot be reached; retry later") from None
        except psycopg.errors.LockNotAvailable as error:
            log.error("database lock not free", extra={"error": "LockNotAvailable", "sqlstate": "55P03"})
            raise DatabaseUnavailable(lock_not_free(error)) from None
        except psycopg.OperationalError as error:
            log.error("database unavailable", extra={"error": type(error).__name__})
            raise DatabaseUnavailable("the vault database is unavailable; retry later") from None
        except psycopg.errors.InsufficientPrivilege as error:
            table = _ROW_SECURITY_TABLE.search(error.diag.message_primary or "")
            log.error(
                "the vault database refused a statement for lack of privilege: a row-level security policy on a"
                " table of the vault's (the database owner's: none is shipped; with row_security = off it fails the"
                " statement instead of filtering what it reads) or a privilege taken from the vault's role; nothing"
                " was done. Report it to the security team and run audit verify",
                extra={
                    "error": "InsufficientPrivilege",
                    "sqlstate": "42501",
                    "row_security_policy_on": table.group(1) if table else None,
                },
            )
            raise StorageError(POLICY_OR_PRIVILEGE) from None
        except psycopg.Error as error:
            log.error(
                "database error", extra={"error": type(error).__name__, "sqlstate": getattr(error, "sqlstate", None)}
            )
            raise StorageError(f"the vault database refused the operation ({type(error).__name__})") from None

    return wrapper
