"""A reveal is served only once its audit row is in vault.audit_log, whatever the insert reports.

The append counts the ids its INSERT returns (one per event). An AFTER trigger that deletes the
row it fired for, or a rule that diverts the insert to another table and RETURNs that row, both
hand back one id per event while vault.audit_log keeps nothing. So the service also looks for
its rows in the log once the append is committed, and refuses the calls when they are not there.
"""

from __future__ import annotations

import pytest

from tests.integration.audit_attacks import (
    Anchored,
    Sabotage,
    anchored,
    diverted_elsewhere,
    own_database,
    reveal_with_audit_undone,
)

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests

_UNDO_AUDIT_ROWS = {
    "after-trigger-deletes": Sabotage(
        plant="ALTER TABLE vault.audit_log DISABLE TRIGGER audit_log_append_only;"
        " CREATE FUNCTION public.audit_undone() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
        " $$ BEGIN DELETE FROM vault.audit_log WHERE id = NEW.id; RETURN NULL; END $$;"
        " CREATE TRIGGER audit_undone AFTER INSERT ON vault.audit_log"
        " FOR EACH ROW EXECUTE FUNCTION public.audit_undone()",
        remove="DROP TRIGGER audit_undone ON vault.audit_log; DROP FUNCTION public.audit_undone();"
        " ALTER TABLE vault.audit_log ENABLE TRIGGER audit_log_append_only",
    ),
    "rule-returning": diverted_elsewhere(),
}


@pytest.mark.parametrize("undone_by", sorted(_UNDO_AUDIT_ROWS))
def test_a_reveal_whose_audit_row_the_database_undoes_after_returning_its_id_is_not_revealed(
    own_database: dict[str, str], anchored: Anchored, undone_by: str
) -> None:
    seen = reveal_with_audit_undone(own_database, anchored, _UNDO_AUDIT_ROWS[undone_by])
    assert seen.done == 0 or seen.recorded == seen.done or seen.report.finding is not None, seen.unnoticed()
