"""A login of the test's own IN ROLE a group, as Kubernetes' Vault makes one per pod: its DSN, dropped after.

Since attack 33, A4 the lock watchdog holds every connection slot of its own login and ends any session of it that is
not its own, so a test that probes what the watchdog's role may do while a watchdog runs logs in as another member
of tokenvault_watchdog (another pod's login: the same privileges, not the same login).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo


@contextlib.contextmanager
def member_login(admin_dsn: str, group: str, limit: int = 3) -> Iterator[str]:
    """A new login IN ROLE `group` with CONNECTION LIMIT `limit`; its DSN (the admin's server and database)."""
    name = f"member_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {} PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(limit), sql.Literal(password), sql.Identifier(group)
            )
        )
    try:
        yield make_conninfo(admin_dsn, user=name, password=password)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def logins_beside_the_watchdog(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's DSNs, the watchdog's as another member login of its role: the stack's watchdog holds its own
    login's every slot (attack 33, A4)."""
    with member_login(stack_env["PG_ADMIN_DSN"], "tokenvault_watchdog") as watchdog_member:
        yield {**stack_env, "PG_WATCHDOG_DSN": watchdog_member}
