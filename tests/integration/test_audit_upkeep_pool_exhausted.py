"""A pool exhausted by statements the database owner holds is not reported as a database outage (review 18, R18-12).

Every `PoolTimeout` was taken for an outage (review 17 #4): the owner's `LOCK TABLE vault.tokens`
holds every pooled connection in a waiting reveal, the upkeep's next statement gets no connection
within the pool's timeout, and the replica reported "cannot reach the vault's database"
(tokenvault_audit_database_unreachable 1: AuditDatabaseUnreachable paged with its runbook
"restore the database", and the tampering alerts AuditRowsWaiting and AuditRowsUnchecked held)
with the database up. Now the upkeep asks the database through a connection of its own, outside
the pool: it answers, so the round is a failed round like any other, the tampering alerts stand.

Nor when the owner, no superuser, also keeps that connection out (review 19, R19-7): a connection
limit of the pool's size on the database, or CONNECT revoked. The server refuses the probe, so the
database answers; the round fails as "every pooled connection is busy", and the refusal is told.

Real PostgreSQL: a database of the module's own on the session's cluster, owned by a role that is no
superuser - a connection limit and CONNECT are the database's, so the owner's statements reach no other
test (the outage itself: test_audit_upkeep_database_down.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.integration.own_audit_log import reveal_event
from tests.integration.own_database import database_of_its_own
from tests.unit.fakes import FakeAuditLog
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.anchoring import AuditChecksOverdue
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.metering import RefusalAuditor, TokenizeMeter

POOL_SIZE = 2
KEEP_OUT = {
    "lock only": ([], []),
    "connection limit": (
        [f"ALTER DATABASE {{database}} CONNECTION LIMIT {POOL_SIZE}"],
        ["ALTER DATABASE {database} CONNECTION LIMIT -1"],
    ),
    "connect revoked": (
        ["REVOKE CONNECT ON DATABASE {database} FROM PUBLIC"],
        ["GRANT CONNECT ON DATABASE {database} TO PUBLIC"],
    ),
}
"""What the owner runs on its database, once the pool is held, so the server refuses any new connection of the
vault's; its undoing."""


class _Signer:
    key_name = "k"

    def sign(self, data: bytes) -> str:
        return "sig:" + data.hex()


@dataclass(frozen=True)
class OwnedDatabase:
    """A migrated database, its superuser's and vault service's DSNs, and `owner`, the role owning it."""

    database: str
    owner: str
    admin_dsn: str
    vault_dsn: str


@pytest.fixture(scope="module")
def pg(stack_env: dict[str, str]) -> Iterator[OwnedDatabase]:
    """A database that a role with no superuser owns: what it may do, the owner of a managed database may."""
    owner = f"pool_exhausted_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {owner} NOLOGIN NOSUPERUSER")
    try:
        with database_of_its_own(stack_env, "pool_exhausted", migrated=True) as env:
            with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
                row = admin.execute("SELECT current_database()").fetchone()
                assert row is not None
                admin.execute(f"ALTER DATABASE {row[0]} OWNER TO {owner}")
            yield OwnedDatabase(row[0], owner, env["PG_ADMIN_DSN"], env["PG_VAULT_DSN"])
    finally:
        with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
            admin.execute(f"DROP ROLE {owner}")


@pytest.mark.parametrize("keep_out", KEEP_OUT, ids=list(KEEP_OUT))
def test_a_pool_the_owners_lock_exhausts_is_a_failed_round_not_an_outage(
    pg: OwnedDatabase, keep_out: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = open_vault_pool(pg.vault_dsn, POOL_SIZE)
    pool.timeout = 1.0  # the pool's wait for a connection (10 s in the service)
    try:
        log = PostgresAuditLog(pool)
        log.appended.max_age = 0.5
        audit, failed, refused_probes = FakeAuditLog(), list[int](), list[int]()
        upkeep = AuditUpkeep(
            audit,
            log,
            _Signer(),
            TokenizeMeter(),
            RefusalAuditor(audit),
            lambda c: None,
            appended=log.appended,
            on_failed=lambda: failed.append(1),
            on_probe_refused=lambda: refused_probes.append(1),
        )
        log.append(reveal_event(1))
        with _pool_held_by_the_owners_lock(pg, pool), _as_owner(pg, *KEEP_OUT[keep_out]):
            with caplog.at_level(logging.ERROR):
                upkeep._safely()  # no pooled connection within the pool's timeout
            assert failed == [1]
            assert not log.appended.database_unreachable, "an exhausted pool was reported as a database outage"
            assert "every pooled connection is busy" in caplog.text
            assert refused_probes == ([] if keep_out == "lock only" else [1])
            with pytest.raises(AuditChecksOverdue) as refused:
                log.appended.check_open()  # still fails closed past the bound
            assert not refused.value.database_unreachable
            assert "cannot reach the vault's database" not in str(refused.value)
        upkeep._safely()
        assert len(log.appended) == 0 and not log.appended.database_unreachable
    finally:
        pool.close()


@contextlib.contextmanager
def _pool_held_by_the_owners_lock(pg: OwnedDatabase, pool: ConnectionPool) -> Iterator[None]:
    """Every connection of `pool` lent to a reveal waiting on the owner's lock on vault.tokens; all back after."""
    with psycopg.connect(pg.admin_dsn) as owner:
        owner.execute("LOCK TABLE vault.tokens IN ACCESS EXCLUSIVE MODE")
        reveals = [threading.Thread(target=_read_tokens, args=(pool,), daemon=True) for _ in range(pool.max_size)]
        for reveal in reveals:  # every pooled connection waits on the owner's lock
            reveal.start()
        _until_waiting(owner, pool.max_size)
        try:
            yield
        finally:
            owner.rollback()  # the lock goes: the reveals end, their connections come back
            for reveal in reveals:
                reveal.join(timeout=10)


@contextlib.contextmanager
def _as_owner(pg: OwnedDatabase, statements: list[str], undo: list[str]) -> Iterator[None]:
    """`statements` (`{database}`: its name) run (and committed) as the database's owner, `undo` after."""
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(f"SET ROLE {pg.owner}")
        for statement in statements:
            conn.execute(statement.format(database=pg.database))
        try:
            yield
        finally:
            for statement in undo:
                conn.execute(statement.format(database=pg.database))


def _read_tokens(pool: ConnectionPool) -> None:
    """A reveal's read of vault.tokens on a pooled connection (it waits while the owner's lock is held)."""
    with pool.connection() as conn:
        conn.execute("SELECT count(*) FROM vault.tokens")


def _until_waiting(owner: psycopg.Connection, count: int) -> None:
    """Wait until `count` statements wait on the owner's lock on vault.tokens (each on a pooled connection it holds).

    Not the pool's statistics: they count a connection lent out while the pool is still opening it.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = owner.execute(
            "SELECT count(*) FROM pg_catalog.pg_locks WHERE relation = 'vault.tokens'::regclass AND NOT granted"
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the reveals never took the pool's connections")
