"""An erasure is done only with its audit row stored, against a database owner who drops it.

Attack test of the second insider round (3 Dec, h-attack2 89949aa; kept in a file of its own
beside tests/integration/test_audit_anchoring_bypass.py's reveal findings). Threat model,
*Insider: the database owner*: every erasure leaves an audit row naming who erased what.
"""

from __future__ import annotations

from tests.integration.audit_attacks import Anchored, Sabotage, anchored, erase_with_audit_undone, own_database

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests

_DROP_AUDIT_ROWS = Sabotage(
    plant="CREATE RULE audit_dropped AS ON INSERT TO vault.audit_log DO INSTEAD NOTHING",
    remove="DROP RULE audit_dropped ON vault.audit_log",
)


def test_an_erasure_whose_audit_row_the_database_dropped_is_not_done(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # The same rule as finding 2 (DO INSTEAD NOTHING), against Erase: vault.erase_tokens writes
    # its audit row with a plain INSERT inside the function, whose result nobody checks (the fix
    # counted the rows of the service's own appends only). The privacy officer's erasure is
    # done with no row naming who erased what, and audit-verify reports the log intact.
    erasure = erase_with_audit_undone(own_database, anchored, _DROP_AUDIT_ROWS)
    assert erasure.done or erasure.kept, "the erasure was refused, yet the value is gone: it was not rolled back"
    assert erasure.done == 0 or erasure.recorded == 1 or erasure.report.finding is not None, erasure.unnoticed()
