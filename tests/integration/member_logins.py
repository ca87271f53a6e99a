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
