"""Apply the SQL migrations in `migrations/` to a database, each once, in order.

Run as a database owner/admin (never as a service role):

    python -m tokenvault_common.migrations --dsn postgresql://admin@host/db

The DSN holds the database owner's password, the most powerful one: like the services' DSNs
(tokenvault_common/database_dsn.py), one that could hand it to whatever answers on the database's
address (TCP with neither `sslmode=verify-full`, a `require_auth` refusing password and md5, nor
`channel_binding=require`; or a socket directory other users can write to) is refused before any
connection, exit 2. `--public-login` skips that for a login that is public anyway (the exercise
image's `postgres`/`postgres`).

Every file waits for a table's lock at most `--lock-timeout` (MIGRATIONS_LOCK_TIMEOUT, 3s; `SET lock_timeout` for
the migrator's session before each file, which a file may lower or raise for itself), and is tried again
(`--lock-attempts`, 3; 2 s then 4 s apart) when the wait ran out: while a migration waits for a table, every
session that wants the table queues behind it - one analyst's idle transaction on user_logins stopped the ETL's
loads for as long as it stayed open (attack 32, F9). Then it stops (exit 1) naming the sessions it waited for (pid,
login, state, the transaction's age; never their statements) and what to do.

Migrations never drop data: they create roles, schemas and tables if missing, upgrade an
existing `user_logins` (the exercise's DDL) in place, and change indexes and constraints
(0011 replaces the vault's B-trees over random keys with hash indexes, rewriting
`vault.tokens` once to number its rows).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import cast

import psycopg
from psycopg import sql

from tokenvault_common.database_dsn import password_exposed

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_ID = 0x746F6B76  # advisory lock: one migrator at a time across replicas and jobs

log = logging.getLogger(__name__)


def pending(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """Migration files not yet recorded in `public.schema_migrations`."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM public.schema_migrations")}
    return [p for p in sorted(directory.glob("*.sql")) if p.stem not in applied]


LOCK_TIMEOUT = "3s"
"""How long a migration waits for a lock (each try), unless the operator says (MIGRATIONS_LOCK_TIMEOUT)."""
LOCK_ATTEMPTS = 3
"""Tries of a migration whose lock wait ran out, before the runner stops naming the sessions it waited for."""
LOCK_BACKOFF_SECONDS = 2.0
"""The pause before the second try; doubled before each later one."""
_BLOCKERS = """
SELECT a.pid, a.usename::text, a.application_name, a.state, a.backend_type,
       floor(extract(epoch FROM pg_catalog.now() - a.xact_start))::bigint
FROM pg_catalog.pg_stat_activity a WHERE a.pid = ANY (pg_catalog.pg_blocking_pids(%s))
"""
"""The sessions a waiting backend waits for (holding the lock, or asking first): never their statements."""
_MUTEX_HOLDERS = """
SELECT a.pid, a.usename::text, a.application_name, a.state, a.backend_type,
       floor(extract(epoch FROM pg_catalog.now() - a.xact_start))::bigint,
       a.usename = session_user
         OR COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = a.usesysid), false)
         OR (pg_catalog.to_regrole('tokenvault_owner') IS NOT NULL
             AND pg_catalog.pg_has_role(a.usesysid, 'tokenvault_owner', 'MEMBER'))
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
          SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
  AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1 AND a.pid <> pg_catalog.pg_backend_pid()
"""
"""Who holds the migrators' advisory lock, and whether it is a migrator (this login, a superuser, the owner's)."""


class MigrationLockTimeout(Exception):
    """A migration ran out of its lock waits: nothing of it was applied (the ones before it were)."""


_LOCK_TIMEOUT_SPELLING = re.compile(r"\s*(0|[0-9]+\s*(ms|s|min|h|d))\s*", re.ASCII)
"""The lock timeouts taken: a whole number with a unit PostgreSQL knows, or 0 - nothing it would read as ms."""


class BadLockTimeout(ValueError):
    """A lock_timeout PostgreSQL does not take, or a count of attempts under 1: nothing was applied."""


def _session(row: tuple[object, ...]) -> str:
    pid, login, application, state, backend, age = row
    parts = [f"login {login or '?'}"]
    parts += [f"application {application}"] if application else []
    parts += [str(state or backend or "?")]
    parts += [f"transaction {age} s old"] if age is not None else []
    return f"pid {pid} ({', '.join(parts)})"


class _BlockerWatch:
    """While a migration runs, who its session waits for, seen every 0.2 s from a connection of its own."""

    def __init__(self, dsn: str, pid: int) -> None:
        try:
            self._conn: psycopg.Connection | None = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        except psycopg.Error:  # no slot left, say: the names are a help, never the reason to fail
            self._conn = None
        self._pid = pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seen: dict[int, str] = {}

    def _watch(self) -> None:
        if self._conn is None:
            return
        while not self._stop.wait(0.2):
            try:
                rows = self._conn.execute(_BLOCKERS, (self._pid,)).fetchall()
            except psycopg.Error:
                return  # the names are a help, never the reason to fail
            self.seen.update({int(str(row[0])): _session(row) for row in rows})

    def __enter__(self) -> _BlockerWatch:
        self.seen = {}
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="migration-blockers", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _wait_bound_seconds(conn: psycopg.Connection, attempts: int, backoff: float) -> float | None:
    """What a migration may wait in all: each try's lock_timeout (the session's, just set) and the pauses between.

    None for a lock_timeout of 0 (no bound asked).
    """
    row = conn.execute("SELECT extract(epoch FROM pg_catalog.current_setting('lock_timeout')::interval)").fetchone()
    seconds = float(str(row[0])) if row and row[0] is not None else 0.0
    if seconds <= 0:
        return None
    return seconds * attempts + sum(backoff * 2.0**i for i in range(attempts - 1))


def _take_the_migrators_lock(conn: psycopg.Connection, bound: float | None) -> None:
    """The advisory lock that keeps migrators one at a time (attack 33, A3).

    Another migrator (this login, a superuser, a member of the owner) is waited for as long as it runs: a long
    migration is its right. Anyone else holding the key - where PUBLIC still runs pg_advisory_lock (a managed
    PostgreSQL whose owner may not revoke it: 0007, 0037, 0045 warn) one idle session held it and every upgrade
    waited, unnamed - is waited for at most what a migration's own lock waits add up to (`bound`), then
    MigrationLockTimeout names it.
    """
    started = time.monotonic()
    said = False
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,)).fetchone()
        if row and row[0]:
            return
        holders = conn.execute(_MUTEX_HOLDERS, (_LOCK_ID,)).fetchall()
        strangers = [_session(tuple(h[:6])) for h in holders if not h[6]]
        if strangers and bound is not None and time.monotonic() - started >= bound:
            raise MigrationLockTimeout(
                f"no migration was applied: the migrators' lock (advisory key {_LOCK_ID}), which keeps them one at a"
                f" time, is held by {'; '.join(strangers)} - not a migrator's login - and was waited for"
                f" {bound:g} s. Have that session let it go (or end it: SELECT pg_terminate_backend(pid) as the"
                " owner; revoke EXECUTE on pg_advisory_lock from PUBLIC where you may), then run the migrations again"
            )
        if not said:
            log.info(
                "waiting for the migrators' lock",
                extra={"held_by": "; ".join(_session(tuple(h[:6])) for h in holders) or "a session just gone"},
            )
            said = True
        time.sleep(0.2)


def _run_file(conn: psycopg.Connection, path: Path) -> None:
    with conn.transaction():
        conn.execute(path.read_bytes())
        conn.execute("INSERT INTO public.schema_migrations (version) VALUES (%s)", (path.stem,))


def migrate(
    dsn: str,
    directory: Path = MIGRATIONS_DIR,
    *,
    lock_timeout: str | None = None,
    lock_attempts: int | None = None,
    backoff_seconds: float = LOCK_BACKOFF_SECONDS,
) -> list[str]:
    """Apply every pending migration, each in its own transaction; return the versions applied.

    Every WARNING PostgreSQL or a migration raises is logged at WARNING with the migration's version
    (review 31, R31-4: psycopg drops notices unless a handler takes them, so a migrator that may not
    revoke what a migration revokes - a non-superuser owner, on a managed PostgreSQL - was never told).

    Each file runs with the session's lock_timeout set to `lock_timeout` (after the advisory lock that keeps
    migrators one at a time: waited for as long as another migrator holds it, at most what the files' own waits add
    up to when anyone else does - attack 33, A3): a file whose lock wait runs out is rolled back
    and tried again, `lock_attempts` in all, `backoff_seconds` then twice that... apart; then MigrationLockTimeout
    names the sessions it waited for (attack 32, F9). Unset, they are MIGRATIONS_LOCK_TIMEOUT's and
    MIGRATIONS_LOCK_ATTEMPTS' (else 3s and 3): every caller (the embedded stack's too) takes the operator's.
    """
    if lock_timeout is None:
        lock_timeout = os.environ.get("MIGRATIONS_LOCK_TIMEOUT") or LOCK_TIMEOUT
    if lock_attempts is None:
        try:
            lock_attempts = int(os.environ.get("MIGRATIONS_LOCK_ATTEMPTS") or LOCK_ATTEMPTS)
        except ValueError:
            raise BadLockTimeout("MIGRATIONS_LOCK_ATTEMPTS is not a whole number") from None
    if lock_attempts < 1:
        raise BadLockTimeout(f"lock attempts {lock_attempts}: 1 or more")
    if not _LOCK_TIMEOUT_SPELLING.fullmatch(lock_timeout):
        # PostgreSQL reads a bare number as milliseconds: MIGRATIONS_LOCK_TIMEOUT=3 meant 3 s and waited 3 ms, and a
        # busy table's migration gave up at once (review 36, R36-9). Its integer parser also takes 2.5, +3, 3.0, 0x10
        # and 1e3, each read as milliseconds too (attack 35, N3): only a whole number with a unit, or 0, is taken.
        raise BadLockTimeout(
            f"lock_timeout {lock_timeout!r} is not a whole number followed by a unit (ms, s, min, h, d), nor 0:"
            " PostgreSQL would read it as milliseconds - say 3s or 500ms"
        )
    applied: list[str] = []
    current = ["(before any migration)"]

    def tell(notice: psycopg.errors.Diagnostic) -> None:
        if (notice.severity_nonlocalized or notice.severity or "") == "WARNING":
            log.warning("migration %s: %s", current[0], notice.message_primary, extra={"version": current[0]})

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(tell)
        try:
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (lock_timeout,))
        except psycopg.errors.InvalidParameterValue as error:
            raise BadLockTimeout(f"lock_timeout {lock_timeout!r}: {error}") from None
        _take_the_migrators_lock(conn, _wait_bound_seconds(conn, lock_attempts, backoff_seconds))
        watch: _BlockerWatch | None = None
        try:
            for path in pending(conn, directory):
                current[0] = path.stem
                for attempt in range(1, lock_attempts + 1):
                    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (lock_timeout,))
                    watch = watch or _BlockerWatch(dsn, conn.info.backend_pid)
                    try:
                        with watch:
                            _run_file(conn, path)
                        break
                    except psycopg.errors.LockNotAvailable:
                        blockers = "; ".join(watch.seen.values()) or "sessions not seen in time to be named"
                        if attempt >= lock_attempts:
                            raise MigrationLockTimeout(
                                f"migration {path.stem} was not applied: it waited {lock_attempts} times for a lock,"
                                f" {lock_timeout} each (lock_timeout), behind {blockers}. While it waits, every"
                                " session that wants the same table waits behind it (the ETL's loads, the vault's"
                                " calls), so it gives up instead. Have those sessions end their transactions (or end"
                                " them: SELECT pg_terminate_backend(pid) as the owner), then run the migrations again;"
                                " or let it wait longer with --lock-timeout (MIGRATIONS_LOCK_TIMEOUT)"
                                + (f"; applied before it: {', '.join(applied)}" if applied else "")
                            ) from None
                        pause = backoff_seconds * 2 ** (attempt - 1)
                        log.warning(
                            "migration %s waited %s for a lock behind %s: tried again in %.0f s (%s of %s)",
                            path.stem, lock_timeout, blockers, pause, attempt + 1, lock_attempts,
                            extra={"version": path.stem},
                        )  # fmt: skip
                        time.sleep(pause)
                log.info("applied migration", extra={"version": path.stem})
                applied.append(path.stem)
        finally:
            if watch is not None:
                watch.close()
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied


def set_role_passwords(dsn: str, passwords: dict[str, str]) -> None:
    """Give login roles their passwords (taken from the deployment's secret store, never the repo).

    Each password is sent as its SCRAM-SHA-256 verifier, computed here by libpq (as psql's password
    command does), never in clear: `ALTER ROLE ... PASSWORD` is DDL, and a server that logs
    DDL (`log_statement = ddl`, common for change auditing) or a failing statement would write a
    plaintext password into its log.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        for role, password in passwords.items():
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode()))
            )


MEMBER_LOGIN_CONNECTION_LIMIT = 3
"""A login made by --member-login (the lock watchdog's): its warm connection, a check, a reconnection."""
SERVING_ROLE = "tokenvault_vault"
SERVING_ROLE_LEAST_SHARE = 16
"""Under this, the serving role's limit is not lowered (migration 0046's floor): a WARNING says what to do."""

_SLOTS = """
SELECT pg_catalog.current_setting('max_connections')::integer
       - pg_catalog.current_setting('superuser_reserved_connections')::integer
       - coalesce(pg_catalog.current_setting('reserved_connections', true)::integer, 0),
       (SELECT coalesce(pg_catalog.sum(r.rolconnlimit), 0)::integer FROM pg_catalog.pg_roles r
        WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolconnlimit > 0 AND r.rolname <> %(role)s),
       (SELECT r.rolconnlimit FROM pg_catalog.pg_roles r WHERE r.rolname = %(role)s)
"""


def fit_serving_role_limit(conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """Lower tokenvault_vault's CONNECTION LIMIT so that every login's limit together fits the server's slots.

    Migration 0046 gave the role what `max_connections - superuser_reserved_connections` left once the logins
    there were then had their limits counted; a login made after it (the analysts', the lock watchdog's) takes
    its slots out of that share, else the serving role holding all of its own (attack 30, F4/F6) plus the others
    at theirs leave a later login nothing ("remaining connection slots are reserved"), the watchdog's included.
    Lowered only when the limits overcommit the slots, never raised, never set on a role without one (0046
    warned then); not under 16 (a WARNING instead). Returns the role's limit now (None: no such role).
    """
    row = conn.execute(_SLOTS, {"role": SERVING_ROLE}).fetchone()
    if row is None or row[2] is None:
        return None
    slots, others, limit = (int(str(v)) for v in row)
    share = slots - others
    if limit == -1 or limit <= share:
        return limit
    if share < SERVING_ROLE_LEAST_SHARE:
        log.warning(
            "%s keeps CONNECTION LIMIT %s: the server's %s non-superuser slots leave it %s once the other logins'"
            " limits (%s) are counted; raise max_connections or lower those, then ALTER ROLE %s CONNECTION LIMIT n",
            SERVING_ROLE, limit, slots, share, others, SERVING_ROLE,
        )  # fmt: skip
        return limit
    conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(sql.Identifier(SERVING_ROLE), sql.Literal(share)))
    log.info("%s CONNECTION LIMIT lowered from %s to %s: every login's limit within the %s slots",
             SERVING_ROLE, limit, share, slots)  # fmt: skip
    return share


class MemberLoginRefused(Exception):
    """An existing role --member-login was to make a login of its group may do more than its group: nothing changed."""


_EXISTING = """
SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls, r.rolcanlogin, r.rolconnlimit,
       ARRAY(SELECT DISTINCT g.rolname::text FROM pg_catalog.pg_auth_members m
             JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) m.roleid
             WHERE m.member OPERATOR(pg_catalog.=) r.oid AND g.rolname OPERATOR(pg_catalog.<>) %(group)s ORDER BY 1),
       ARRAY(SELECT DISTINCT u.rolname::text FROM pg_catalog.pg_auth_members m
             JOIN pg_catalog.pg_roles u ON u.oid OPERATOR(pg_catalog.=) m.member
             WHERE m.roleid OPERATOR(pg_catalog.=) r.oid AND u.rolname OPERATOR(pg_catalog.<>) current_user ORDER BY 1)
FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) %(login)s
"""
"""An existing role's attributes, limit, the other roles it is a member of, and the roles that are its members (but
the migrator, whom PostgreSQL 16+ makes an ADMIN member of a role it creates)."""
_ATTRIBUTES = ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")


def _refusal(login: str, group: str, row: tuple[object, ...]) -> str | None:
    """Why the existing role `login` (its _EXISTING row) may not be made a login of `group` (None: it may)."""
    attributes = [name for name, value in zip(_ATTRIBUTES, row[:5], strict=True) if value]
    member_of, members = (", ".join(str(v) for v in cast(list[object], names or [])) for names in row[7:9])
    problems = [f"it has {', '.join(attributes)}"] if attributes else []
    problems += [f"it is a member of {member_of}"] if member_of else []
    problems += [f"{members} may act as it (its members)"] if members else []
    if not problems:
        return None
    return (
        f"--member-login {login}:{group}: the existing role {login} may do more than {group}'s work"
        f" ({'; '.join(problems)}): nothing was changed. Drop it, or take those away (ALTER ROLE, REVOKE), and run"
        " again"
    )


def create_member_logins(dsn: str, groups: dict[str, str]) -> None:
    """Make each login (name -> its group role): LOGIN, CONNECTION LIMIT 3, IN ROLE its group and nothing else.

    A role of that name that exists already (made by hand) is given the same (LOGIN, the limit, the membership), as
    the embedded stack makes the watchdog's login (devstack/postgres.py) - but MemberLoginRefused, and nothing
    changed for any login, if it may do more: an attribute (SUPERUSER, CREATEROLE, CREATEDB, REPLICATION,
    BYPASSRLS), a membership of another role (the owner's, the ETL's), or a role that is its member (and so may act
    as it). Then the serving role's limit is fitted (fit_serving_role_limit): the logins' slots come out of its share.
    """
    limit = sql.Literal(MEMBER_LOGIN_CONNECTION_LIMIT)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        for login, group in groups.items():
            row = conn.execute(_EXISTING, {"login": login, "group": group}).fetchone()
            if row is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {} IN ROLE {}").format(
                        sql.Identifier(login), limit, sql.Identifier(group)
                    )
                )
                continue
            if refused := _refusal(login, group, row):
                raise MemberLoginRefused(refused)
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN CONNECTION LIMIT {}").format(sql.Identifier(login), limit))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))
            if not row[5] or row[6] != MEMBER_LOGIN_CONNECTION_LIMIT:
                log.info("%s (existing) made a login with CONNECTION LIMIT %s (was %s, %s)", login,
                         MEMBER_LOGIN_CONNECTION_LIMIT, row[6], "login" if row[5] else "no login")  # fmt: skip
        if groups:
            fit_serving_role_limit(conn)


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Apply tokenvault database migrations.")
    parser.add_argument("--dsn", default=os.environ.get("MIGRATIONS_DSN"), help="admin connection string")
    parser.add_argument(
        "--role-password",
        action="append",
        default=[],
        metavar="ROLE=ENV_VAR",
        help="after migrating, set ROLE's password from environment variable ENV_VAR",
    )
    parser.add_argument(
        "--member-login",
        action="append",
        default=[],
        metavar="LOGIN:GROUP=ENV_VAR",
        help="after migrating, make LOGIN a login with CONNECTION LIMIT 3 IN ROLE GROUP, its password from ENV_VAR"
        " (the lock watchdog's: watchdog:tokenvault_watchdog=PG_WATCHDOG_PASSWORD); an existing role that may do"
        " more (an attribute, another membership, a member of its own) is refused, exit 2",
    )
    parser.add_argument(
        "--public-login",
        action="store_true",
        help="the DSN's login is public (the exercise image's postgres/postgres): connect even though the DSN"
        " could give its password to an impostor; never for a password of yours",
    )
    parser.add_argument(
        "--lock-timeout",
        default=os.environ.get("MIGRATIONS_LOCK_TIMEOUT", LOCK_TIMEOUT),
        help="how long each migration waits for a table's lock per try, as PostgreSQL's lock_timeout (3s; '0' waits"
        " for ever): while it waits, every session wanting the table queues behind it (MIGRATIONS_LOCK_TIMEOUT)",
    )
    parser.add_argument(
        "--lock-attempts",
        type=int,
        default=os.environ.get("MIGRATIONS_LOCK_ATTEMPTS", str(LOCK_ATTEMPTS)),
        help="tries of a migration whose lock wait ran out, 2 s then 4 s... apart, before it stops naming the"
        " sessions it waited for, exit 1 (3; MIGRATIONS_LOCK_ATTEMPTS)",
    )
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or MIGRATIONS_DSN) is required")
    variable = "the migrator's DSN (--dsn or MIGRATIONS_DSN)"
    if not args.public_login and (problem := password_exposed(variable, args.dsn, os.environ)):
        parser.error(f"{problem}; nothing was done")  # the owner's password, the most powerful one (exit 2)
    try:
        done = migrate(args.dsn, lock_timeout=args.lock_timeout, lock_attempts=args.lock_attempts)
    except MigrationLockTimeout as error:
        print(f"migrations: {error}", file=sys.stderr)
        return 1
    except BadLockTimeout as error:
        parser.error(f"--lock-timeout/--lock-attempts: {error}; nothing was done")  # exit 2
    print(f"applied {len(done)} migration(s): {', '.join(done) or 'none pending'}")
    passwords = {}
    groups = {}
    for item in args.member_login:
        login_group, _, variable = item.partition("=")
        login, _, group = login_group.partition(":")
        if not (login and group and variable):
            parser.error(f"--member-login {item!r}: expected LOGIN:GROUP=ENV_VAR")
        groups[login] = group
        args.role_password.append(f"{login}={variable}")
    for item in args.role_password:
        role, _, variable = item.partition("=")
        if not os.environ.get(variable):
            parser.error(f"environment variable {variable} (password of {role}) is not set")
        passwords[role] = os.environ[variable]
    try:
        create_member_logins(args.dsn, groups)
    except MemberLoginRefused as error:
        print(f"migrations: {error}", file=sys.stderr)
        return 2
    set_role_passwords(args.dsn, passwords)
    return 0


if __name__ == "__main__":
    sys.exit(main())
