"""The audit chain against real Postgres: concurrent replicas append without forking it."""

from __future__ import annotations

import threading
import uuid

from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.audit import AuditEvent, first_broken_record


def test_two_replicas_appending_at_once_keep_one_intact_chain(stack_env: dict[str, str]) -> None:
    purpose = f"replicas {uuid.uuid4()}"
    pools = [open_vault_pool(stack_env["PG_VAULT_DSN"], 4) for _ in range(2)]
    try:
        replicas = [PostgresAuditLog(pool) for pool in pools]
        errors: list[BaseException] = []

        def append_many(log: PostgresAuditLog, caller: int) -> None:
            try:
                for n in range(40):
                    log.append(AuditEvent(f"caller-{caller}", "detokenize", f"ok: {n}", 1, purpose, "ip"))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=append_many, args=(replicas[caller % 2], caller)) for caller in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert errors == []
        records = replicas[0].records()
        assert first_broken_record(records) is None
        ours = [r for r in records if r.event.purpose == purpose]
        assert len(ours) == 6 * 40
        for caller in range(6):  # each caller's rows are all there, in the order it wrote them
            outcomes = [r.event.outcome for r in ours if r.event.client == f"caller-{caller}"]
            assert outcomes == [f"ok: {n}" for n in range(40)]
    finally:
        for pool in pools:
            pool.close()
