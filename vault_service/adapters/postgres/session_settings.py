"""The settings every database session of the vault starts with, and the defaults that would change them.

Any PostgreSQL role may set defaults for its own sessions (`ALTER ROLE CURRENT_USER [IN DATABASE
...] SET name = value`, kept in `pg_db_role_setting`), and the database owner for every session of
a database. Settings given at connection start (libpq's `options`) take precedence over both, so
the vault pins there what would otherwise change what it does without an error:

- `synchronous_commit = on` (or `remote_apply`, TOKENVAULT_DB_SYNCHRONOUS_COMMIT): off, an audit
  row is acknowledged, and the value revealed, before it is durable; a crash then loses the row
  (insider round 15, finding 3: 3 of 3 crashes). The chain trigger also raises it for the commit
  of every transaction that appends an audit row (migration 0025), whoever opened the session.
  Pinned from the setting, `on` by default: a server configured with `remote_apply` (so that read
  replicas see audit rows at once) sets the same in TOKENVAULT_DB_SYNCHRONOUS_COMMIT, else the
  pin would lower its sessions to `on` (review 16, finding 5). Weaker values (`off`, `local`,
  `remote_write`) are refused at start (`SYNCHRONOUS_COMMIT_LEVELS`).
- `default_transaction_isolation = read committed`: the chain trigger reads the log's head after
  taking the chain's lock, and the budgets and erasure functions read rows after locking them;
  under repeatable read or serializable those reads see the snapshot from before the wait
  (concurrent appends then fail on the chain's unique link: measured), and the vault's
  multi-statement transactions would read rows as of their first statement.
- `search_path = pg_catalog, pg_temp`: which function, operator or type an unqualified name in
  the vault's SQL means. Every relation is named by schema and the role can write no schema
  today (migration 0018); pinned so that a schema made writable later is not one a default
  search path plants into.
- `max_parallel_workers_per_gather`, `plan_cache_mode`: how the vault's statements are planned
  (`open_vault_pool`).
- `client_min_messages = error`: no NOTICE or WARNING is sent to the vault. libpq reads a message
  whole, whatever its size (up to 1 GB), and copies it into a result: a row-level-security policy
  or trigger function of the database owner's that raised a notice of a few hundred MB on an
  audit upkeep statement took the replica past its memory limit, OOM-killed between a reveal and
  its checkpoint's export (retest 17, finding A). Errors still come (a message of any size too:
  nothing in libpq bounds it; docs/threat-model.md). The upkeep sets it again in each of its
  transactions (upkeep_connections.py), since a function can change it for the session; one that
  sets it again just before it raises is not stopped by this (the threat model says what holds then).
- `row_security = off`: a row-level security policy on a table a serving session reads or writes makes its
  statement fail (InsufficientPrivilege, logged as such: errors.py) instead of quietly filtering rows. No
  migration enables row security or creates a policy, but the database owner can, and a policy sees the
  statement (`current_query()`): one hid the erase rows from the erased-token set's read alone (attack 44,
  A44-1), one hid the rows from an erase row on from Detokenize's `max(id)` only, for one call, so the reveal's
  record said "fetch saw records up to" a head before the erasure and `audit verify` judged a reveal after an
  undone erasure fetched before it (attack 46, A46-2). The start-up and round catalog check refuses them too
  (catalog_additions.py). Not pinned for the sessions of the report commands (`audit verify`, `who-saw`:
  `REPORT_SESSION_UNPINNED`): they must read the chain past such a policy to name it, not fail on it (2bcffe4).

Not pinned: settings whose change makes the vault's statements fail or slow, never do something
else (`statement_timeout`, `lock_timeout`, the idle timeouts, `default_transaction_read_only`,
the planner's `enable_*` and costs, `jit`, `work_mem`; `standard_conforming_strings = off` makes
the chain trigger fail to compile, `DateStyle` other than ISO makes psycopg refuse to read
times, psycopg reads either `bytea_output`): the role can deny service anyway, by holding the
audit chain's lock (whose wait the chain trigger bounds itself, migration 0035; the upkeep ends a
session holding it for seconds, chain_lock.py). (Every statement of the audit upkeep's round sets
its own `statement_timeout` per transaction, so one made to wait fails and is counted:
`PostgresAuditLog.upkeep_statement_timeout`; a timeout the owner traps is caught by the round's
watchdog on the client side.) One session does something else when its transaction is ended: a key
job's hold (key_job_liveness.py), whose end makes a live job look interrupted; it turns off the
idle-in-transaction and (PostgreSQL 17+) transaction timeouts itself (review 32, F4), and its sessions start with a
lock_timeout and statement_timeout of their own (key_job_liveness.SESSION_BOUNDS: attack 31, F3).
Nor settings the vault's SQL does not depend on: `transform_null_equals` (no `= NULL` comparison),
`TimeZone` (times are hashed and compared in UTC). Each of those a default sets is still reported
(`defaults_set_for_session`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from tokenvault_common.pg_options import startup_options

SYNCHRONOUS_COMMIT_LEVELS = ("on", "remote_apply")
"""The values TOKENVAULT_DB_SYNCHRONOUS_COMMIT may take: an audit row's commit waits at least for
its WAL to be flushed (`on`, and with synchronous standbys their flush too), or also applied on the
synchronous standbys (`remote_apply`). `off`, `local` and `remote_write` acknowledge a commit a
crash (of the primary, or of the standby with `local`/`remote_write` during a failover) can lose."""

PINNED_SETTINGS: dict[str, str] = {
    "synchronous_commit": "on",
    "default_transaction_isolation": "read committed",
    "search_path": "pg_catalog, pg_temp",
    "max_parallel_workers_per_gather": "0",
    "plan_cache_mode": "force_generic_plan",
    "client_min_messages": "error",
    "row_security": "off",
}
"""Each setting the vault's sessions start with, as `current_setting` shows it (synchronous_commit:
its default; `session_settings_with` gives the configured one)."""

REPORT_SESSION_UNPINNED = frozenset({"row_security"})
"""What the report commands' sessions (`audit verify`, `who-saw`) leave at the server's default: they read the
chain past an owner's row-level security policy, and the schema check names the policy (2bcffe4)."""


def session_settings_with(synchronous_commit: str, *, report: bool = False) -> dict[str, str]:
    """PINNED_SETTINGS with `synchronous_commit` as configured; ValueError for a level weaker than `on`.

    `report`: for a report command's session (`audit verify`, `who-saw`), without REPORT_SESSION_UNPINNED.
    """
    if synchronous_commit not in SYNCHRONOUS_COMMIT_LEVELS:
        raise ValueError(f"synchronous_commit must be one of {', '.join(SYNCHRONOUS_COMMIT_LEVELS)}")
    settings = {**PINNED_SETTINGS, "synchronous_commit": synchronous_commit}
    return {name: value for name, value in settings.items() if not (report and name in REPORT_SESSION_UNPINNED)}


VAULT_SESSION_OPTIONS = startup_options(PINNED_SETTINGS)
"""Settings every connection of the vault service starts with (see `open_vault_pool`)."""

_DEFAULTS_FOR_THIS_SESSION = """
SELECT pg_catalog.unnest(s.setconfig)
FROM pg_catalog.pg_db_role_setting s
WHERE s.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) session_user))
  AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                            WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))
"""


@dataclass(frozen=True)
class SessionSettingsReport:
    """What the role's and the database's defaults set for the vault's sessions (parameter names only)."""

    overridden: tuple[str, ...]
    """Defaults of pinned parameters, to another value: the startup options override them."""
    in_effect: tuple[str, ...]
    """Defaults of parameters the vault does not pin: in effect in its sessions."""
    not_pinned: tuple[str, ...]
    """Pinned parameters whose value in the session is not the pinned one (startup options lost)."""

    @property
    def defaults_set(self) -> int:
        """How many parameters a role or database default sets differently from the vault."""
        return len(self.overridden) + len(self.in_effect)


def _normal(value: str) -> str:
    """A setting's value compared without spaces, quotes or case (`pg_catalog,pg_temp`, `'0'`)."""
    return value.replace(" ", "").replace('"', "").replace("'", "").lower()


def _name_and_value(item: str) -> tuple[str, str]:
    name, _, value = item.partition("=")
    return name.lower(), value


def defaults_set_for_session(
    conn: psycopg.Connection[Any], pinned: dict[str, str] = PINNED_SETTINGS
) -> SessionSettingsReport:
    """Read `pg_db_role_setting` for this session's login role and database, and the `pinned` values in effect.

    A default equal to the pinned value (migration 0010 sets `max_parallel_workers_per_gather = 0`
    for the role) changes nothing and is not reported.
    """
    overridden: set[str] = set()
    in_effect: set[str] = set()
    for (item,) in conn.execute(_DEFAULTS_FOR_THIS_SESSION).fetchall():
        name, value = _name_and_value(str(item))
        if name not in pinned:
            in_effect.add(name)
        elif _normal(value) != _normal(pinned[name]):
            overridden.add(name)
    not_pinned = [
        name
        for name, value in pinned.items()
        if _normal(str((conn.execute("SELECT pg_catalog.current_setting(%s)", (name,)).fetchone() or ("",))[0]))
        != _normal(value)
    ]
    return SessionSettingsReport(tuple(sorted(overridden)), tuple(sorted(in_effect)), tuple(not_pinned))
