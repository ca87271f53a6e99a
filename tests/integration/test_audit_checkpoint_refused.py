"""A database that refuses to store the vault's checkpoints does not leave the rows meanwhile unanchored.

Real Postgres and OpenBao, on a database of the test's own (insider round 8, Finding 7). The
database owner makes the checkpoint table refuse every checkpoint (its check function replaced
by one that raises), lets reveals happen, and once the service restarts (counting the log
afresh) deletes their rows and lets checkpoints through again: the service then signs the
doctored head. Only a checkpoint exported while the database refused names the deleted rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import REGISTRY

from tests.conftest import running_vault
from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import own_database

__all__ = ["own_database"]  # the fixture used here, shared by the audit attack tests

_REFUSING_CHECK = (
    "CREATE OR REPLACE FUNCTION vault.audit_checkpoint_matches() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION 'checkpoint refused' USING ERRCODE = 'check_violation'; END $$"
)


def _refused_seen() -> float:
    return REGISTRY.get_sample_value("tokenvault_audit_checkpoint_refused_total") or 0.0


def test_reveals_made_while_the_database_refuses_checkpoints_cannot_be_deleted_unseen(
    own_database: dict[str, str], tmp_path: Path
) -> None:
    # Threat model: rows older than the checkpoint interval are anchored outside Postgres, and
    # deleting them is caught by audit-verify with the exported copy. While the database refused
    # to store checkpoints the service exported none either ("audit upkeep postponed" every
    # round): the reveals of that period were anchored nowhere, and after a restart the owner
    # could delete them with audit-verify reporting the log intact.
    exported = tmp_path / "checkpoints.jsonl"
    settings = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1", "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported)}
    with attack.as_owner(own_database) as conn:
        row = conn.execute("SELECT pg_get_functiondef('vault.audit_checkpoint_matches()'::regprocedure)").fetchone()
    assert row is not None
    original_check = row[0]
    with running_vault(own_database, **settings) as vault:
        token = attack.anchored_token(own_database, vault)
        refused = _refused_seen()
        with attack.as_owner(own_database) as conn:
            conn.execute(_REFUSING_CHECK)
        revealed = 0
        for n in range(3):
            revealed += attack.count_revealed(own_database, vault, token, [f"REFUSED-{n}"])
            time.sleep(1.5)  # over a checkpoint interval: each reveal is the head of one round
        assert _refused_seen() > refused, "the refused checkpoints went uncounted (AuditCheckpointRefused)"
    with attack.as_owner(own_database) as conn:  # the service is down: the owner deletes the tail ...
        reveal_ids = [r[0] for r in conn.execute("SELECT id FROM vault.audit_log WHERE purpose LIKE 'REFUSED-%'")]
        conn.execute("DELETE FROM vault.audit_log WHERE id >= %s", (min(reveal_ids),))
        conn.execute(original_check)  # ... and lets checkpoints through again
    with running_vault(own_database, **settings) as restarted:
        attack.anchored_token(own_database, restarted)  # the restarted service signs the doctored log
        report = attack.audit_verify(restarted, exported)
    assert revealed == 3 and len(reveal_ids) == 3
    assert report.finding is not None, (
        f"{revealed} value(s) were revealed while the database refused checkpoints; after the owner deleted"
        f" their audit rows audit-verify with the exported copy reports the log intact ({report.rows} rows,"
        f" {report.checkpoints} checkpoints)"
    )
    assert f"row {min(reveal_ids)} " in report.finding.reason, report.finding
