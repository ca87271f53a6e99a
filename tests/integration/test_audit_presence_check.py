"""The audit presence check counts ids, not rows (third insider round, 3 Dec).

vault_service/adapters/postgres/audit.py: an append "is refused unless there is one per event
and, once committed, each of those rows is in vault.audit_log" - against a rule diverting the
insert elsewhere and returning that row. The check counts the ids the append returned that
have a row in the log. A diverting rule whose RETURNING hands back the id of a row that is
already in the log (here the oldest, under a signed checkpoint) passes it: the reveal is
served, no row for it is written anywhere in vault.audit_log, and audit-verify reports the log
intact. The sequence and head checks of migration 0015 see nothing either (no row is added).
"""

from __future__ import annotations

from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    diverted_elsewhere,
    own_database,
    reveal_with_audit_undone,
)

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests

_DIVERT_RETURNING_AN_OLD_ID = diverted_elsewhere(returned_id="(SELECT min(id) FROM vault.audit_log)")


def test_a_diverted_audit_row_returning_an_existing_id_does_not_let_a_reveal_through(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    seen = reveal_with_audit_undone(own_database, anchored, _DIVERT_RETURNING_AN_OLD_ID)
    assert seen.done == 0 or seen.recorded == seen.done or seen.report.finding is not None, seen.unnoticed()
