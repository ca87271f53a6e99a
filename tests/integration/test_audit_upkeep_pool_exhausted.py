"""A pool exhausted by statements the database owner holds is not reported as a database outage (review 18, R18-12).

Every `PoolTimeout` was taken for an outage (review 17 #4): the owner's `LOCK TABLE vault.tokens`
holds every pooled connection in a waiting reveal, the upkeep's next statement gets no connection
within the pool's timeout, and the replica reported "cannot reach the vault's database"
(tokenvault_audit_database_unreachable 1: AuditDatabaseUnreachable paged with its runbook
"restore the database", and the tampering alerts AuditRowsWaiting and AuditRowsUnchecked held)
with the database up. Now the upkeep asks the database through a connection of its own, outside
the pool: it answers, so the round is a failed round like any other, the tampering alerts stand.

Real PostgreSQL: a cluster of the test's own (the outage itself: test_audit_upkeep_database_down.py).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.integration.own_audit_log import reveal_event
from tests.integration.own_cluster import cluster_of_its_own
from tests.unit.fakes import FakeAuditLog
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.anchoring import AuditChecksOverdue
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.metering import RefusalAuditor, TokenizeMeter


class _Signer:
    key_name = "k"

    def sign(self, data: bytes) -> str:
        return "sig:" + data.hex()


def test_a_pool_the_owners_lock_exhausts_is_a_failed_round_not_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with cluster_of_its_own(tmp_path) as pg:
        pool = open_vault_pool(pg.vault_dsn, 2)
        pool.timeout = 1.0  # the pool's wait for a connection (10 s in the service)
        try:
            log = PostgresAuditLog(pool)
            log.appended.max_age = 0.5
            audit, failed = FakeAuditLog(), list[int]()
            upkeep = AuditUpkeep(
                audit,
                log,
                _Signer(),
                TokenizeMeter(),
                RefusalAuditor(audit),
                lambda c: None,
                appended=log.appended,
                on_failed=lambda: failed.append(1),
            )
            log.append(reveal_event(1))
            with psycopg.connect(pg.admin_dsn) as owner:
                owner.execute("LOCK TABLE vault.tokens IN ACCESS EXCLUSIVE MODE")
                reveals = [threading.Thread(target=_read_tokens, args=(pool,), daemon=True) for _ in range(2)]
                for reveal in reveals:  # both pooled connections wait on the owner's lock
                    reveal.start()
                _until_busy(pool, 2)
                with caplog.at_level(logging.ERROR):
                    upkeep._safely()  # no pooled connection within the pool's timeout
                assert failed == [1]
                assert not log.appended.database_unreachable, "an exhausted pool was reported as a database outage"
                assert "every pooled connection is busy" in caplog.text
                with pytest.raises(AuditChecksOverdue) as refused:
                    log.appended.check_open()  # still fails closed past the bound
                assert not refused.value.database_unreachable
                assert "cannot reach the vault's database" not in str(refused.value)
                owner.rollback()  # the lock goes: the reveals end, their connections come back
            for reveal in reveals:
                reveal.join(timeout=10)
            upkeep._safely()
            assert len(log.appended) == 0 and not log.appended.database_unreachable
        finally:
            pool.close()


def _read_tokens(pool: ConnectionPool) -> None:
    """A reveal's read of vault.tokens on a pooled connection (it waits while the owner's lock is held)."""
    with pool.connection() as conn:
        conn.execute("SELECT count(*) FROM vault.tokens")


def _until_busy(pool: ConnectionPool, count: int) -> None:
    """Wait until `count` connections of `pool` are lent out."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats.get("pool_size", 0) - stats.get("pool_available", 0) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the reveals never took the pool's connections")
