"""`audit verify --exported COPY` says what it read from COPY, and verifies nothing it could not read (attack 17 #5).

The database owner deleted the newest reveal rows and the database's checkpoints above them.
Against the vault's own checkpoint file audit-verify said TAMPERED; against the same lines as a
log pipeline stores them (each wrapped in the shipper's JSON: Docker json-file and Fluent Bit in
`log`, Vector in `message`; the kubelet's CRI log file, where the shipped Kubernetes deployment's
checkpoints are) it read no checkpoint and said "audit log intact ... and the exported
copy verified", and who-saw answered without the deleted reveals. Now wrapped lines are read; a
line that looks like a checkpoint but cannot be read refuses the copy; a copy whose newest
checkpoint is older than the database's by more than the allowed lag is not "verified"; and the
report says how many checkpoints it read, the newest at which row. Real Postgres and OpenBao,
the command as the security team runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    count_revealed,
    own_database,
    tokenize_fresh_ip,
)
from tests.integration.vault_start import run_admin
from vault_service.domain.checkpoints import Checkpoint

__all__ = ["anchored", "own_database"]  # fixtures used here

_WRAPPERS: dict[str, Callable[[str], str]] = {
    "docker json-file": lambda line: json.dumps({"log": line + "\n", "stream": "stdout", "time": "2026-12-04T13:55Z"}),
    "vector": lambda line: json.dumps({"message": line, "host": "vault-0", "source_type": "kubernetes_logs"}),
    "fluent bit parsed": lambda line: json.dumps({"log": json.loads(line), "stream": "stdout"}),
    "kubelet (CRI)": lambda line: f"2026-12-04T13:55:00.123456789Z stdout F {line}",
}


def _verify(
    env: dict[str, str], copy: Path, max_copy_lag: float | None = None, own: Path | None = None, *command: str
) -> tuple[int, str]:
    """`python -m vault_service.admin audit-verify --exported COPY [--max-copy-lag S]`: exit code, what it printed.

    `own`: the vault's own copy (TOKENVAULT_AUDIT_CHECKPOINT_FILE), read together with COPY; None: none
    configured (as in the Kubernetes manifests), COPY alone is read. `command`: another than audit-verify.
    """
    lag = ["--max-copy-lag", str(max_copy_lag)] if max_copy_lag is not None else []
    own_copy = str(own) if own is not None else ""
    done = run_admin(
        env, *(command or ("audit-verify",)), "--exported", str(copy), *lag, TOKENVAULT_AUDIT_CHECKPOINT_FILE=own_copy
    )
    return done.returncode, done.stdout + done.stderr


def _copy(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_deleted_reveals_are_caught_through_a_log_shippers_wrapped_copy_and_an_unreadable_copy_is_refused(
    own_database: dict[str, str], anchored: Anchored, tmp_path: Path
) -> None:
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    vault.wait_for_checkpoint()
    with as_owner(own_database) as conn:
        keep = conn.execute("SELECT max(id) FROM vault.audit_log").fetchone()
    assert keep is not None
    assert count_revealed(own_database, vault, token, [f"CASE-1708{n}" for n in range(3)]) == 3
    vault.wait_for_checkpoint()
    lines = exported.read_text().splitlines()
    checkpoints = [json.loads(line) for line in lines if '"head_id"' in line]  # the others: notes of rows pending
    newest = checkpoints[-1]["head_id"]
    copies = {
        name: _copy(tmp_path, f"{n}.jsonl", [wrap(line) for line in lines])
        for n, (name, wrap) in enumerate(_WRAPPERS.items())
    }
    cut_short = _copy(tmp_path, "cut.jsonl", [*lines[:-1], lines[-1][: len(lines[-1]) // 2]])
    with as_owner(own_database) as conn, conn.transaction():
        conn.execute("DELETE FROM vault.audit_log WHERE id > %s", keep)
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id > %s", keep)

    for name, copy in copies.items():
        code, printed = _verify(own_database, copy)
        assert code == 1, (name, printed)
        assert f"{len(checkpoints)} exported checkpoint(s) read from {copy}, newest at row {newest}" in printed, printed
        assert f"the exported copy holds a checkpoint at row {newest}" in printed, (name, printed)
        assert "intact" not in printed, (name, printed)
    code, printed = _verify(own_database, cut_short)
    assert code == 1 and "intact" not in printed, printed
    assert f"1 line(s) look like exported checkpoints but cannot be read as one (line {len(lines)})" in printed


def test_a_copy_older_than_the_databases_newest_checkpoint_by_more_than_the_allowed_lag_is_not_verified(
    own_database: dict[str, str], anchored: Anchored, tmp_path: Path
) -> None:
    vault, exported = anchored
    tokenize_fresh_ip(own_database, vault)
    vault.wait_for_checkpoint()
    stale = _copy(tmp_path, "stale.jsonl", exported.read_text().splitlines())  # the shipper stops here
    time.sleep(2.5)
    tokenize_fresh_ip(own_database, vault)
    vault.wait_for_checkpoint()

    code, printed = _verify(own_database, stale, max_copy_lag=1)
    assert code == 1, printed
    assert "exported copy is too old to verify the newest" in printed and "audit log NOT verified" in printed
    assert "intact" not in printed, printed
    code, printed = _verify(own_database, stale, max_copy_lag=60)
    assert code == 0, printed
    assert "audit log intact" in printed and "are vouched for by the database alone" in printed, printed


def test_a_second_genuine_checkpoint_of_a_stored_head_is_evidence_not_tampering(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    """Two replicas that checked the same head each sign and export it when one stores its checkpoint between
    the other's reads; the database keeps one. audit-verify called the other 'differs from its exported
    copy' (CI, 4 December: TAMPERED on an untouched log)."""
    vault, exported = anchored
    tokenize_fresh_ip(own_database, vault)
    vault.wait_for_checkpoint()
    stored = vault.wired.audit.newest_checkpoint()
    assert stored is not None
    head = replace(stored.head, at=stored.head.at + timedelta(milliseconds=1))  # the other replica's read of it
    racing = Checkpoint(head, vault.wired.signer.key_name, vault.wired.signer.sign(head.message()))
    with exported.open("a") as copy:
        copy.write(json.dumps(racing.exported(), sort_keys=True) + "\n")

    code, printed = _verify(own_database, exported, own=exported)  # the vault's own copy given: read once
    assert code == 0, printed
    assert "audit log intact" in printed
    assert f"exported checkpoint(s) read from {exported}, newest at row" in printed, printed


def _newest_head(copy: Path) -> int:
    return max(int(json.loads(line).get("head_id", 0)) for line in copy.read_text().splitlines())


def test_a_stale_copy_given_does_not_hide_the_newest_rows_and_checkpoint_the_owner_deleted(
    own_database: dict[str, str], anchored: Anchored, tmp_path: Path
) -> None:
    """The copy given is read together with the vault's own (TOKENVAULT_AUDIT_CHECKPOINT_FILE), as the served
    AuditReports reads a copy sent (attack 28, F5). Read instead of it, a stale copy passed a log whose newest
    rows and checkpoint the database's owner had deleted: exit 0, "audit log intact"."""
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    vault.wait_for_checkpoint()
    stale = _copy(tmp_path, "stale.jsonl", exported.read_text().splitlines())  # a lagging shipper's copy
    stale_head = _newest_head(stale)
    assert count_revealed(own_database, vault, token, ["CASE-2805"]) == 1  # the rows the owner will delete
    vault.wait_for_checkpoint()
    deadline = time.monotonic() + 30
    while _newest_head(exported) <= stale_head:
        assert time.monotonic() < deadline, "the vault exported no newer checkpoint"
        time.sleep(0.2)
    with as_owner(own_database) as conn, conn.transaction():
        conn.execute("DELETE FROM vault.audit_log WHERE id > %s", (stale_head,))
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id > %s", (stale_head,))

    for command in (("audit-verify",), ("who-saw", token)):
        code, printed = _verify(own_database, stale, 86_400, exported, *command)
        assert code == 1, (command, printed)
        assert "audit log TAMPERED" in printed and "the database no longer has" in printed, (command, printed)
        assert f"read from {stale} and {exported}, newest at row" in printed, (command, printed)
        assert "intact" not in printed and "reveal(s)" not in printed, (command, printed)
