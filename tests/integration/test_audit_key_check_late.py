"""An audit key's check value recorded after its insert row fails audit-verify and who-saw (attack 10, finding 6).

Since migration 0024 a key's check value is recorded in its insert row. The one exception is a
key made before 0024: the service records its check value at its first key refresh after the
migration, and such a database still verifies (with a note naming the recording's time). Any
other late check value names whatever key the row held when it was recorded: the database owner
inserts an audit key without a check value, its wrapped key of their choosing, and the service
records the check value of that key. audit-verify used to print a note and exit 0 for it.

Against real Postgres and OpenBao, on a database of the test's own; audit-verify and who-saw run
as the security team runs them (`audit_report_cli`, their own wiring).
"""

from __future__ import annotations

import io
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from tests.conftest import RunningVault, running_vault, stack_identity, vault_config
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from tests.integration.own_database import database_of_its_own, migrate_before
from tokenvault_client import Revealed, VaultClient
from tokenvault_common.migrations import migrate
from vault_service.entrypoints import audit_report_cli

__all__ = ["anchored", "own_database"]  # fixtures used here

_AUDIT_KEY_WITHOUT_CHECK_VALUE = (
    "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state)"
    " SELECT 'audit', %s, kek_name, 'decrypt_only' FROM vault.data_keys WHERE purpose = 'audit' RETURNING id"
)


def _who_saw(env: dict[str, str], exported: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`who-saw TOKEN --exported ...` as the security team runs it: exit code and what it printed."""
    printed = io.StringIO()
    monkeypatch.setattr(audit_report_cli, "console", Console(file=printed, width=400))
    code = audit_report_cli.audit_who_saw(
        vault_config(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)), token, exported
    )
    return code, printed.getvalue()


def _revealed(env: dict[str, str], vault: RunningVault) -> str:
    """A token of a fresh IP address, revealed once by the fraud investigator."""
    token = tokenize_fresh_ip(env, vault)
    with VaultClient.connect(vault.address, stack_identity(env, "fraud-investigator"), deadline=10) as client:
        (outcome,) = client.detokenize([token], "CASE-2026-931")
    assert isinstance(outcome, Revealed), outcome
    return token


@pytest.mark.parametrize("audited", [True, False], ids=["insert-row-audited", "triggers-off"])
def test_an_audit_key_inserted_without_a_check_value_fails_once_one_is_recorded(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    vault, exported = anchored
    token = _revealed(own_database, vault)
    _, wrapped = vault.wired.wrapper.new_data_key()  # a key of the insider's choosing, wrapped by the KEK
    owner = psycopg.connect(own_database["PG_ADMIN_DSN"], autocommit=True) if audited else as_owner(own_database)
    with owner:
        row = owner.execute(_AUDIT_KEY_WITHOUT_CHECK_VALUE, (wrapped,)).fetchone()
    assert row is not None
    (key_id,) = row
    vault.wired.keys.refresh()  # what the service does every TOKENVAULT_KEY_CHECK_SECONDS: records it
    vault.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1, printed
    assert f"audit key {key_id}: check value recorded late, in record" in printed, printed
    assert "for a key made after migration 0024" in printed, printed
    assert "audit log NOT verified" in printed and "audit log intact" not in printed, printed
    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 1 and "reveal(s)" not in printed, printed
    assert token not in printed


def test_a_database_upgraded_through_0024_still_verifies_with_a_note(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key made before 0024: its check value is recorded late, by the service, and trusted (review A, 10)."""
    exported = tmp_path / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "late_check", checkpoint_file=exported) as env:
        assert migrate_before(env, "0024_data_key_lifecycle_guarded")[-1].startswith("0023_")
        with running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault:
            token = _revealed(env, vault)  # the audit key's insert row: no check value to record yet
            migrate(env["PG_ADMIN_DSN"])
            vault.wired.keys.refresh()  # what the service does every TOKENVAULT_KEY_CHECK_SECONDS
            vault.wait_for_checkpoint()
            verified, printed = run_audit_verify(env, exported, monkeypatch)
            seen, listed = _who_saw(env, exported, token, monkeypatch)
    assert verified == 0, printed
    assert "audit log intact" in printed, printed
    assert "check value recorded late, in record" in printed, printed
    assert "for a key made before migration 0024; trusted only if recorded at the migration 0024 rollout" in printed
    assert seen == 0 and "1 reveal(s) and 0 erasure(s) of this token" in listed, listed
