"""`audit verify --exported FILE` with a FILE that holds no checkpoint verifies nothing, and says so.

The exported copy is what catches a database owner who deletes the newest rows together with
their checkpoints. Run against a file holding none (the wrong file, a log of another process, an
emptied copy), audit-verify printed "audit log intact ... and the exported copy verified" and
exited 0 (documentation walk, 4 December). It now stops with exit 1 naming the file, as it does
for a missing one. Against real Postgres and OpenBao, run as the security team runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import vault_service_env
from tests.conftest import RunningVault
from tests.integration.vault_start import run_admin

_NOT_A_COPY = {
    "empty": "",
    "another process's log": '{"time": "2026-12-04T13:37:12+00:00", "level": "INFO", "message": "stack up"}\n',
    "not json": "checkpoints are shipped to the SIEM\n",
}


@pytest.mark.parametrize("content", _NOT_A_COPY.values(), ids=_NOT_A_COPY.keys())
@pytest.mark.parametrize("command", [["audit-verify"], ["who-saw", "ip_" + "T" * 22]], ids=["verify", "who-saw"])
def test_a_file_without_any_checkpoint_is_no_exported_copy(
    stack_env: dict[str, str], vault: RunningVault, tmp_path: Path, content: str, command: list[str]
) -> None:
    vault.wait_for_checkpoint()  # the database holds signed checkpoints the copy should hold too
    copy = tmp_path / "checkpoints-copy.jsonl"
    copy.write_text(content)
    done = run_admin(stack_env, *command, "--exported", str(copy))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "intact" not in done.stdout and "verified" not in done.stdout, done.stdout
    assert f"{copy} holds no exported checkpoint" in done.stderr, done.stderr


def test_the_vaults_own_exported_copy_verifies(stack_env: dict[str, str], vault: RunningVault) -> None:
    vault.wait_for_checkpoint()
    done = run_admin(stack_env, "audit-verify")  # TOKENVAULT_AUDIT_CHECKPOINT_FILE, where the vault exports
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "audit log intact" in done.stdout and "the exported copy verified" in done.stdout, done.stdout


def test_a_copy_given_is_read_with_the_vaults_own_copy_which_is_not_skipped_when_missing(
    stack_env: dict[str, str], vault: RunningVault, tmp_path: Path
) -> None:
    """The copy given adds to the vault's own (TOKENVAULT_AUDIT_CHECKPOINT_FILE), never stands in for it
    (attack 28, F5): configured and missing, it stops the command naming it; set empty, the copy alone is read."""
    vault.wait_for_checkpoint()
    own = Path(vault_service_env(stack_env)["TOKENVAULT_AUDIT_CHECKPOINT_FILE"])
    copy = tmp_path / "shipped.jsonl"
    copy.write_bytes(own.read_bytes())
    missing = tmp_path / "gone" / "checkpoints.jsonl"

    done = run_admin(stack_env, "audit-verify", "--exported", str(copy), TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(missing))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "intact" not in done.stdout and "verified" not in done.stdout, done.stdout
    assert f"no exported checkpoints at {missing} (TOKENVAULT_AUDIT_CHECKPOINT_FILE)" in done.stderr, done.stderr

    alone = run_admin(
        stack_env,
        "audit-verify",
        "--exported",
        str(copy),
        "--max-copy-lag",
        "3600",
        TOKENVAULT_AUDIT_CHECKPOINT_FILE="",
    )
    assert alone.returncode == 0, (alone.stdout, alone.stderr)
    assert f"exported checkpoint(s) read from {copy}, newest at row" in alone.stdout, alone.stdout
    together = run_admin(stack_env, "audit-verify", "--exported", str(copy), "--max-copy-lag", "3600")
    assert together.returncode == 0, (together.stdout, together.stderr)
    assert f"exported checkpoint(s) read from {copy} and {own}, newest at row" in together.stdout, together.stdout
