"""Anchoring silenced by a rule that drops checkpoint rows (third insider round, 3 Dec).

docs/threat-model.md, accepted risks: the rows not anchored yet are those written since the last
checkpoint - "at most TOKENVAULT_AUDIT_CHECKPOINT_SECONDS (default 2 s) while the service runs";
a checkpoint the database will not keep is still signed and exported (the planted-checkpoint fix).
The upkeep takes add_checkpoint() == False ("one for the same head exists already: another
replica") as done and exports nothing. A `DO INSTEAD NOTHING` rule on vault.audit_checkpoints
makes every insert report no row: no checkpoint is exported from then on, nothing is logged, and
the database owner deletes the reveals made since without audit-verify noticing.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import Anchored, anchored, own_database
from vault_service.service.exported_copy import read_exported_copy

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests


def _newest_exported(exported: Path) -> int:
    """The newest row an exported checkpoint covers (0: none exported)."""
    return max((c.head.head_id for c in read_exported_copy(exported).checkpoints), default=0)


def test_a_rule_dropping_checkpoint_rows_does_not_stop_the_export_of_checkpoints(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, exported = anchored
    token = attack.anchored_token(own_database, vault)
    with attack.as_owner(own_database) as conn:
        conn.execute("CREATE RULE checkpoints_dropped AS ON INSERT TO vault.audit_checkpoints DO INSTEAD NOTHING")
    revealed = attack.count_revealed(own_database, vault, token, [f"UNANCHORED-{n}" for n in range(3)])
    assert revealed == 3
    with attack.as_owner(own_database) as conn:
        (newest_reveal,) = conn.execute(
            "SELECT max(id) FROM vault.audit_log WHERE purpose LIKE 'UNANCHORED-%'"
        ).fetchone() or (0,)
    deadline = time.monotonic() + 6  # six checkpoint intervals (TOKENVAULT_AUDIT_CHECKPOINT_SECONDS=1)
    while (anchored_up_to := _newest_exported(exported)) < newest_reveal and time.monotonic() < deadline:
        time.sleep(0.2)  # no later than needed: once a checkpoint covers the reveals, waiting proves nothing more
    with attack.as_owner(own_database) as conn:  # the owner now removes the reveals and the rule
        conn.execute("DELETE FROM vault.audit_log WHERE purpose LIKE 'UNANCHORED-%'")
        conn.execute("DROP RULE checkpoints_dropped ON vault.audit_checkpoints")
    report = attack.audit_verify(vault, exported)
    assert anchored_up_to >= newest_reveal or report.finding is not None, (
        f"6 s after {revealed} reveals (audit rows up to {newest_reveal}) the newest exported checkpoint names row"
        f" {anchored_up_to}; the owner deleted the reveals' rows and audit-verify reports the log intact"
        f" ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
