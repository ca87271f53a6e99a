"""A row the database owner had written as hash version 1 is tampered: versions never go back (attack 17, finding 1).

A version-1 row hash (rows from before migration 0006) covers neither the row's id nor its
certificate serial and digest nor `revealed`, the keyed hashes of the tokens an erasure destroyed
(what who-saw and erase reconciliation read). audit-verify took a version-1 row anywhere, also
after version-2 rows. So the database owner had the chain trigger write erase rows as version 1
(patched for the two calls, then restored: no trace in the schema), and long after checkpoints
were signed and exported past them swapped which tokens each erase row names and changed a
certificate serial: `audit verify --exported` said intact and who-saw named the wrong case.

Now a row may be version 1 only before every version-2 row, and only with the fields version 1
does not hash empty (as every row before 0006 has them): audit-verify names the first such row,
who-saw refuses. Against real Postgres and OpenBao, the commands run as the security team runs them.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import vault_config
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    erase,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from vault_service.entrypoints import audit_report_cli

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


def _who_saw(env: dict[str, str], exported: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    printed = io.StringIO()
    monkeypatch.setattr(audit_report_cli, "console", Console(file=printed, width=400))
    code = audit_report_cli.audit_who_saw(
        vault_config(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)), token, exported
    )
    return code, printed.getvalue()


def test_erase_rows_written_as_version_1_cannot_be_re_attributed_under_exported_checkpoints(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    first, second = tokenize_fresh_ip(own_database, vault), tokenize_fresh_ip(own_database, vault)
    with as_owner(own_database) as conn:
        row = conn.execute("SELECT pg_get_functiondef('vault.audit_log_chain()'::regprocedure)").fetchone()
        assert row is not None
        original = str(row[0])
        patched = original.replace("    RETURN NEW;\nEND", _ERASE_ROWS_AS_VERSION_1, 1)
        assert patched != original, "the chain trigger's function changed: update the plant"
        conn.execute(patched)
        try:
            assert erase(own_database, vault, [first], "GDPR-2026-1111") == [None]
            assert erase(own_database, vault, [second], "GDPR-2026-2222") == [None]
        finally:
            conn.execute(original)
        rows = conn.execute(
            "SELECT id, hash_version, revealed FROM vault.audit_log WHERE action = 'erase' ORDER BY id"
        ).fetchall()
    assert [version for _, version, _ in rows] == [1, 1], "the plant did not take"
    (first_id, _, first_named), (second_id, _, second_named) = rows
    tokenize_fresh_ip(own_database, vault)  # the vault goes on appending; checkpoints are signed past the erasures
    vault.wait_for_checkpoint()

    with as_owner(own_database) as conn, conn.transaction():  # later: who erased what is rewritten
        conn.execute(
            "UPDATE vault.audit_log SET revealed = %s, client_serial = 'deadbeef' WHERE id = %s",
            (second_named, first_id),
        )
        conn.execute("UPDATE vault.audit_log SET revealed = %s WHERE id = %s", (first_named, second_id))

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1, printed
    assert f"audit log TAMPERED from record id {first_id}: this row is hash version 1 after version-2 rows" in printed
    assert "audit log intact" not in printed
    code, printed = _who_saw(own_database, exported, first, monkeypatch)
    assert code == 1 and "GDPR-2026-2222" not in printed and "TAMPERED" in printed, printed
