"""`audit who-saw` answers from the verified records only, and names erasures too (insider round 8).

Break 2: who-saw verified the log, then printed what a second query (`revealed && ...`)
returned. The database owner made the two queries see different rows (a row-level-security
policy keyed on the query's text) and hid an analyst's reveals from who-saw while both commands
said "intact". Finding 3: an erasure's audit row did not say which tokens it erased, so "who
erased this token, under which case?" had no answer in the chain.

The command itself runs here (`admin_cli.audit_who_saw`, with its own wiring as on a vault pod),
against real Postgres and OpenBao, on a database of the test's own.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import RunningVault, stack_identity, vault_config
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    audit_verify,
    own_database,
    tokenize_fresh_ip,
)
from tokenvault_client import Revealed, VaultClient
from vault_service.entrypoints import admin_cli
from vault_service.service.audit_verify import who_saw

__all__ = ["anchored", "own_database"]  # fixtures used here

_HIDE_FROM_WHO_SAW = (  # /tmp/attack8/who_saw_hidden.sql, as the database owner
    "ALTER TABLE vault.audit_log ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY everyone_inserts ON vault.audit_log FOR INSERT WITH CHECK (true);"
    " CREATE POLICY hide_from_who_saw ON vault.audit_log FOR SELECT"
    "  USING (pg_catalog.current_query() NOT LIKE '%revealed &&%' OR client <> 'fraud-investigator')"
)


def _who_saw(env: dict[str, str], exported: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`who-saw TOKEN --exported ...` as the security team runs it: exit code and what it printed."""
    printed = io.StringIO()
    monkeypatch.setattr(admin_cli, "console", Console(file=printed, width=400))  # one table row per line
    code = admin_cli.audit_who_saw(vault_config(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)), token, exported)
    return code, printed.getvalue()


def _rows_with(printed: str, *cells: str) -> list[str]:
    return [line for line in printed.splitlines() if all(cell in line for cell in cells)]


def _reveal(env: dict[str, str], vault: RunningVault, who: str, token: str, purpose: str) -> None:
    with VaultClient.connect(vault.address, stack_identity(env, who), deadline=10) as client:
        (outcome,) = client.detokenize([token], purpose)
    assert isinstance(outcome, Revealed), outcome


def _erase(env: dict[str, str], vault: RunningVault, tokens: list[str], purpose: str) -> list[object]:
    with VaultClient.connect(vault.address, stack_identity(env, "privacy-officer"), deadline=10) as officer:
        return list(officer.erase(tokens, purpose))


def test_who_saw_lists_the_reveals_a_policy_hides_from_any_query_but_verification(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-810")
    with as_owner(own_database) as conn:
        conn.execute(_HIDE_FROM_WHO_SAW)  # the service goes on appending and checkpointing
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-811")
    vault.wait_for_checkpoint()

    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed
    assert _rows_with(printed, "detokenize", "fraud-investigator", "CASE-2026-810"), printed
    assert _rows_with(printed, "detokenize", "fraud-investigator", "CASE-2026-811"), printed
    assert "2 reveal(s) and 0 erasure(s) of this token" in printed, printed


def test_who_saw_names_who_erased_a_token_under_which_case_from_the_verified_chain(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    token, kept, other = (tokenize_fresh_ip(own_database, vault) for _ in range(3))
    _reveal(own_database, vault, "analyst", token, "CASE-2026-820")
    assert _erase(own_database, vault, [token, other], "GDPR-2026-0042") == [None, None]
    again = _erase(own_database, vault, [token], "GDPR-2026-0043")  # nothing left to erase: not named
    assert again != [None]
    vault.wait_for_checkpoint()

    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed
    assert _rows_with(printed, "erase", "privacy-officer", "GDPR-2026-0042", "ok: 2 erased"), printed
    assert _rows_with(printed, "detokenize", "analyst", "CASE-2026-820"), printed
    assert "GDPR-2026-0043" not in printed
    assert "1 reveal(s) and 1 erasure(s) of this token" in printed, printed

    # The erase row names exactly the tokens it erased, and its hash covers them: the chain verifies.
    report = audit_verify(vault, exported)
    assert report.intact, report.finding
    keys = vault.wired.keys.ring.audit_keys
    assert [r.event.purpose for r in who_saw(report, keys, other)] == ["GDPR-2026-0042"]
    assert who_saw(report, keys, kept) == []
    (erasure,) = [r for r in report.records if r.event.purpose == "GDPR-2026-0042"]
    assert len(erasure.event.revealed) == 2 and erasure.event.client_serial
