"""`python -m tokenvault_common.migrations --member-login LOGIN:GROUP=ENV_VAR` (compose's migrate; review 34, R34-10).

It makes the lock watchdog's login as the embedded stack does (devstack/postgres.py): LOGIN, CONNECTION LIMIT 3,
IN ROLE tokenvault_watchdog and nothing else, its slots out of the serving role's share. A role of that name made
before by hand only joined the group: no connection limit (its sessions could take the slots the watchdog's
reconnection needs), and whatever else it could do kept (a member of the ETL's role, or of the owner's: never ended
by the watchdog's rule). Now it gets the same limit, and one that may do more is refused (exit 2, nothing changed).
Run as compose runs it, on a PostgreSQL cluster of the test's own (roles are the cluster's).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.postgres import Postgres
from devstack.stack import REPO
from tests.integration.own_cluster import cluster_of_its_own


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, migrated, with the stack's logins."""
    with cluster_of_its_own(tmp_path / "pg") as postgres:
        yield postgres


def _migrate(pg: Postgres, *member_logins: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The migrations' command line as compose's migrate runs it, with `--member-login` each of `member_logins`."""
    command = [sys.executable, "-m", "tokenvault_common.migrations", "--dsn", pg.admin_dsn]
    for item in member_logins:
        command += ["--member-login", item]
    return subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


def _role(admin: psycopg.Connection, login: str) -> tuple[object, ...] | None:
    """`login`'s LOGIN, CONNECTION LIMIT, and the roles it is a member of."""
    return admin.execute(
        "SELECT r.rolcanlogin, r.rolconnlimit, ARRAY(SELECT g.rolname::text FROM pg_auth_members m"
        " JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) FROM pg_roles r WHERE r.rolname = %s",
        (login,),
    ).fetchone()


def _verifier(admin: psycopg.Connection, login: str) -> str:
    """`login`'s password verifier (pg_authid: the migrator is a superuser here)."""
    row = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (login,)).fetchone()
    assert row is not None
    return str(row[0])


def _vault_limit(admin: psycopg.Connection) -> int:
    row = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'tokenvault_vault'").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(180)
def test_member_login_makes_the_watchdogs_login_as_the_stack_does_and_refuses_a_role_that_may_do_more(
    private_postgres: Postgres,
) -> None:
    """A new login: made, its password set, it runs the watchdog's function; a second run changes nothing. A role made
    by hand with no limit gets LOGIN and CONNECTION LIMIT 3 (before: no limit). A role that may do more - a member of
    the ETL's role or the owner's, CREATEROLE, a role that is its member - is refused, exit 2, and nothing changed:
    not made a member, its password kept (before: it joined the group and kept the rest). Bad arguments: exit 2."""
    pg = private_postgres
    password = secrets.token_urlsafe(18)
    env = {"PG_DOG_PASSWORD": password}
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        # the command line's own refusals, before anything is made
        bad = _migrate(pg, "dog_new=PG_DOG_PASSWORD", env=env)
        assert bad.returncode == 2 and "expected LOGIN:GROUP=ENV_VAR" in bad.stderr, bad.stderr
        unset = _migrate(pg, "dog_new:tokenvault_watchdog=PG_NOT_SET_ANYWHERE")
        assert unset.returncode == 2 and "PG_NOT_SET_ANYWHERE (password of dog_new) is not set" in unset.stderr
        assert _role(admin, "dog_new") is None

        vault_before = _vault_limit(admin)
        made = _migrate(pg, "dog_new:tokenvault_watchdog=PG_DOG_PASSWORD", env=env)
        assert made.returncode == 0, made.stderr
        assert _role(admin, "dog_new") == (True, 3, ["tokenvault_watchdog"])
        with psycopg.connect(make_conninfo(pg.watchdog_dsn, user="dog_new", password=password)) as dog:
            assert dog.execute("SELECT count(*) FROM watchdog.end_lock_hogs()").fetchone() == (0,)
        assert _vault_limit(admin) == vault_before - 3  # its slots out of the serving role's share
        again = _migrate(pg, "dog_new:tokenvault_watchdog=PG_DOG_PASSWORD", env=env)
        assert again.returncode == 0, again.stderr
        assert _role(admin, "dog_new") == (True, 3, ["tokenvault_watchdog"]) and _vault_limit(admin) == vault_before - 3

        # made by hand before: no limit (-1), or NOLOGIN
        admin.execute("CREATE ROLE dog_by_hand LOGIN")
        admin.execute("CREATE ROLE dog_nologin")
        fitted = _migrate(
            pg, "dog_by_hand:tokenvault_watchdog=PG_DOG_PASSWORD", "dog_nologin:tokenvault_watchdog=PG_DOG_PASSWORD",
            env=env,
        )  # fmt: skip
        assert fitted.returncode == 0, fitted.stderr
        assert _role(admin, "dog_by_hand") == (True, 3, ["tokenvault_watchdog"])
        assert _role(admin, "dog_nologin") == (True, 3, ["tokenvault_watchdog"])
        assert _vault_limit(admin) == vault_before - 9

        # roles that may do more than the watchdog's work
        kept = secrets.token_urlsafe(18)
        cases = {
            "dog_etl": ("CREATE ROLE dog_etl LOGIN IN ROLE tokenvault_etl", "it is a member of tokenvault_etl"),
            "dog_owner": ("CREATE ROLE dog_owner LOGIN IN ROLE tokenvault_owner", "it is a member of tokenvault_owner"),
            "dog_createrole": ("CREATE ROLE dog_createrole LOGIN CREATEROLE", "it has CREATEROLE"),
            "dog_acted_as": ("CREATE ROLE dog_acted_as LOGIN ROLE tokenvault_etl", "tokenvault_etl may act as it"),
        }
        for login, (create, why) in cases.items():
            admin.execute(create)
            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(login), sql.Literal(kept)))
            before = (_role(admin, login), _verifier(admin, login))
            refused = _migrate(pg, "dog_new:tokenvault_watchdog=PG_DOG_PASSWORD",
                               f"{login}:tokenvault_watchdog=PG_DOG_PASSWORD", env=env)  # fmt: skip
            assert refused.returncode == 2 and why in refused.stderr and "nothing was changed" in refused.stderr, (
                login, refused.stderr,
            )  # fmt: skip
            assert (_role(admin, login), _verifier(admin, login)) == before  # not a member, its password kept
            assert "tokenvault_watchdog" not in str(before) and _vault_limit(admin) == vault_before - 9
        assert password not in "".join(r.stdout + r.stderr for r in (made, again, fitted, refused))
