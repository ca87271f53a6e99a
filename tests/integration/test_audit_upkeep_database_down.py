"""A plain database outage is told apart from tampering in the refusal and the alerts (review 17 #4).

A database down longer than the unchecked bound (60 s by default) made every reveal's refusal
read "tell the security team" and fired AuditRowsUnchecked as if rows were being diverted. Now a
round that fails for want of any connection (the pool gets none within its timeout) is noted:
the refusal says the database cannot be reached, and tokenvault_audit_database_unreachable holds
the tampering alerts (deploy/prometheus). The vault still fails closed.

Real PostgreSQL: a cluster of the test's own, stopped under the running upkeep and started again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.postgres import pg_ctl
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


def test_rows_unchecked_through_a_database_outage_are_refused_as_an_outage_and_checked_once_it_is_back(
    tmp_path: Path,
) -> None:
    with cluster_of_its_own(tmp_path) as pg:
        pool = open_vault_pool(pg.vault_dsn, 2)
        pool.timeout = 1.0  # the pool's wait for a connection (10 s in the service): the same outage, sooner
        try:
            log = PostgresAuditLog(pool)
            log.appended.max_age = 1.0
            audit = FakeAuditLog()
            upkeep = AuditUpkeep(
                audit, log, _Signer(), TokenizeMeter(), RefusalAuditor(audit), lambda c: None, appended=log.appended
            )
            log.append(reveal_event(1))
            pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "stop")
            upkeep._safely()  # the pool gets no connection within its timeout
            assert log.appended.database_unreachable
            with pytest.raises(AuditChecksOverdue) as refused:
                log.append(reveal_event(2))  # refused before anything is written: fail closed
            assert refused.value.database_unreachable
            assert "cannot reach the vault's database" in str(refused.value), refused.value
            assert "security team" not in str(refused.value)
            pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "start", pg.port)
            pool.timeout = 10.0  # as the service's: the pool's reconnection, backing off through the outage, has time
            upkeep._safely()
            assert not log.appended.database_unreachable and len(log.appended) == 0
            log.append(reveal_event(3))  # checked: the appends are open again
        finally:
            pool.close()
