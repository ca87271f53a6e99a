"""An erasure is done only with its own audit row stored, against a diverting rule (3 Dec).

Attack test of the third insider round (h-attack3 04fb4de, finding 2; moved to a file of its
own beside tests/integration/test_audit_presence_check.py, which holds the service-append
sibling). Threat model, *Insider: the database owner*: vault.erase_tokens (migration 0016) read
its audit row back by the id its INSERT returned and checked only that a row with that id,
action 'erase' and the same client existed. A rule diverting the INSERT to another table, with
a trigger there setting the id to the officer's earlier, genuine erase row, passed that check:
the value was erased with no row recording it, and audit-verify reported the log intact.
Migration 0017 requires the returned id to be newer than every row before the INSERT and the
row read back to be the one written.
"""

from __future__ import annotations

from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    count_erased,
    diverted_elsewhere,
    erase_with_audit_undone,
    own_database,
    tokenize_fresh_ip,
)

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests

# The INSERT into vault.audit_log goes to public.audit_elsewhere instead, and returns the id the
# trigger there gives it: the id of the client's newest erase row already in the log.
_DIVERT_TO_AN_EARLIER_ERASE_ROW = diverted_elsewhere(
    returned_id="(SELECT max(id) FROM vault.audit_log WHERE action = 'erase' AND client = NEW.client)"
)


def test_an_erasure_whose_audit_row_is_diverted_to_an_earlier_erase_rows_id_is_not_done(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, _ = anchored
    # The officer's earlier, genuine erase row: the id the diverted INSERT hands back.
    assert count_erased(own_database, vault, tokenize_fresh_ip(own_database, vault), "GDPR-SEEN") == 1
    erasure = erase_with_audit_undone(own_database, anchored, _DIVERT_TO_AN_EARLIER_ERASE_ROW)
    assert erasure.done or erasure.kept, "the erasure was refused, yet the value is gone: it was not rolled back"
    assert erasure.done == 0 or erasure.recorded == 1 or erasure.report.finding is not None, erasure.unnoticed()
