"""The newest committed checkpoint is found by an index, not a scan of every v1 one (review 47, R47-9, migration 0072).

A deployment holds one checkpoint per upkeep round that saw the chain grow, every one v1 (no erase-row commitment)
until the first walk reaches the head - tens of millions after a year. Every key-check round of every replica, each
start and the upkeep's walk look up the newest v2 ones: with only the head index that was a (parallel) scan of all
of them. The partial index `audit_checkpoints_committed` holds the v2 rows alone.

Real PostgreSQL, the look-up's own statement as the service sends it, explained on 200,000 v1 checkpoints.
"""

from __future__ import annotations

import psycopg

from tests.integration.audit_attacks import as_owner, own_database
from vault_service.adapters.postgres.audit_chain import _CHECKPOINTS

__all__ = ["own_database"]


def test_the_newest_committed_checkpoints_are_looked_up_by_the_partial_index(own_database: dict[str, str]) -> None:
    env = own_database
    with as_owner(env) as owner:  # v1 checkpoints in number (triggers bypassed: their heads are not checked here)
        owner.execute(
            "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
            " SELECT g, pg_catalog.decode(repeat('00', 32), 'hex'), g, now(), 'tokenvault-audit', 'vault:v1:x'"
            " FROM generate_series(1000000, 1200000) g"
        )
        owner.execute("ANALYZE vault.audit_checkpoints")
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault_role:
        plan = "\n".join(
            str(row[0])
            for row in vault_role.execute(
                f"EXPLAIN {_CHECKPOINTS} WHERE (erase_count IS NOT NULL OR erase_digest IS NOT NULL)"
                " AND head_id > %(above)s ORDER BY head_id DESC LIMIT %(rows)s",
                {"above": 0, "rows": 64},
            ).fetchall()
        )
    assert "audit_checkpoints_committed" in plan, plan  # before 0072: a scan of every v1 checkpoint
