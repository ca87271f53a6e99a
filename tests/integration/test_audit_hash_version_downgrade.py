"""A row the database owner had written as hash version 1 is tampered: versions never go back (attack 17, finding 1).

A version-1 row hash (rows from before migration 0006) covers neither the row's id nor its
certificate serial and digest nor `revealed`, the keyed hashes of the tokens an erasure destroyed
(what who-saw and erase reconciliation read). audit-verify took a version-1 row anywhere, also
after version-2 rows. So the database owner had the chain trigger write erase rows as version 1
(patched for the two calls, then restored: no trace in the schema), and long after checkpoints
were signed and exported past them swapped which tokens each erase row names and changed a
certificate serial: `audit verify --exported` said intact and who-saw named the wrong case.

Then a row might be version 1 only before every version-2 row, and only with the fields version 1
does not hash empty (as every row before 0006 has them): audit-verify names the first such row,
who-saw refuses (kept, `tests/unit/test_audit_hash_versions.py`). Since b6b5b7b (attack 41, A41-3) the
vault reads its erase row back in the erasure's own transaction, and a row written as version 1 is not
the event it asked for: the erasure is refused and rolled back with its row, so the plant leaves no erasure to
re-attribute, and the refusals' own rows (version 1 through the patched trigger) are named by
audit-verify. Against real Postgres and OpenBao.
"""

from __future__ import annotations

import pytest

from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    erase,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from tokenvault_client.errors import Unavailable

__all__ = ["anchored", "own_database"]  # fixtures used here

_ERASE_ROWS_AS_VERSION_1 = """
    IF NEW.action = 'erase' THEN
        NEW.hash_version := 1;
        NEW.row_hash := sha256(NEW.prev_hash || convert_to(
            '{"action":' || to_json(NEW.action)::text
            || ',"at":"' || to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00"'
            || ',"client":' || to_json(NEW.client)::text
            || ',"item_count":' || NEW.item_count::text
            || ',"outcome":' || to_json(NEW.outcome)::text
            || ',"purpose":' || to_json(NEW.purpose)::text
            || ',"token_types":' || to_json(NEW.token_types)::text || '}', 'UTF8'));
    END IF;
    RETURN NEW;
END"""
"""attack17/a1_hash_v1_downgrade.py: the chain trigger writes erase rows as version 1 (hashed as the service did)."""


def test_erase_rows_written_as_version_1_are_refused_with_their_erasure(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    first = tokenize_fresh_ip(own_database, vault)
    with as_owner(own_database) as conn:
        row = conn.execute("SELECT pg_get_functiondef('vault.audit_log_chain()'::regprocedure)").fetchone()
        assert row is not None
        original = str(row[0])
        patched = original.replace("    RETURN NEW;\nEND", _ERASE_ROWS_AS_VERSION_1, 1)
        assert patched != original, "the chain trigger's function changed: update the plant"
        conn.execute(patched)
        try:  # the erase row read back in the erasure's transaction is not the event asked (b6b5b7b): refused
            with pytest.raises(Unavailable, match="did not store this call's record"):
                erase(own_database, vault, [first], "GDPR-2026-1111")
        finally:
            conn.execute(original)
        erase_rows = conn.execute(
            "SELECT hash_version, outcome FROM vault.audit_log WHERE action = 'erase' ORDER BY id"
        ).fetchall()
        (erased_at,) = conn.execute("SELECT erased_at FROM vault.tokens WHERE token = %s", (first,)).fetchone() or (
            "no row",
        )
    assert erased_at is None  # rolled back with its row: the officer was told it was not done
    assert erase_rows and {outcome for _, outcome in erase_rows} == {"refused: ErasureRowNotAsked"}, erase_rows
    assert erase(own_database, vault, [first], "GDPR-2026-1112") == [None]  # the trigger restored: done
    vault.wait_for_checkpoint()
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    # The refusals' own rows went through the patched trigger as version 1: the plant is named, not re-attributable.
    assert code == 1 and "this row is hash version 1 after version-2 rows" in printed, printed
    assert "audit log intact" not in printed
