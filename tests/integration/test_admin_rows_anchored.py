"""The security team's commands anchor their own audit rows before they exit (attack 17, finding 4).

The admin commands (`python -m vault_service.admin reencrypt|rewrap|rotate-*|reindex`) append
their audit rows through the same append as the service, but their process ran no audit
upkeep: the rows were never checked against the chain. Round 15's ghost view, diverting the
rows of operator identities (`vault:...`) out of the chain, kept "who ran reencrypt, under which
ticket" out of the log: the command exited 0 and `audit verify --exported` said intact. Now the
command runs one upkeep round over its rows before it exits: it exits 1 naming the missing ids,
and the exported checkpoint names them, so audit-verify does too. Real Postgres and OpenBao, the
command run as the security team runs it, beside a running vault.

A round at the exit alone was the operator's to skip (review 18, R18-2: killed once its work was
done, its rows never checked): each command now anchors its intent row ("started", the ticket)
before its work and refuses to start when it cannot, and SIGTERM/SIGHUP run the round as Ctrl-C does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.stack import REPO, vault_service_env
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    ghost_view,
    own_database,
    planted,
    run_audit_verify,
    segment_read_held,
    tokenize_fresh_ip,
)
from vault_service.service.exported_copy import read_exported_copy
from vault_service.service.ports import INTENT_HELD

__all__ = ["anchored", "own_database"]  # fixtures used here

_OPERATOR_ROWS_GHOSTED = ghost_view("NEW.client LIKE 'vault:%'")  # attack17/a6_admin_rows_ghosted.py
_OK_ROWS_GHOSTED = ghost_view(  # the owner lets the intent rows through, so the command starts, and keeps the rest
    "NEW.client LIKE 'vault:%' AND NEW.outcome NOT LIKE 'started%'"
)


def _admin_env(env: dict[str, str], exported: Path) -> dict[str, str]:
    return {
        **vault_service_env(env),
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported),
        "VAULT_SECURITY_TOKEN_FILE": env["VAULT_SECURITY_TOKEN_FILE"],
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "400",
    }


def _admin(env: dict[str, str], exported: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m vault_service.admin ARGS` with the security team's token, exporting to the vault's file."""
    return subprocess.run(
        [sys.executable, "-m", "vault_service.admin", *args],
        env=_admin_env(env, exported),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _started_admin(env: dict[str, str], exported: Path, *args: str) -> subprocess.Popen[str]:
    """As `_admin`, running: to be signalled."""
    return subprocess.Popen(
        [sys.executable, "-m", "vault_service.admin", *args],
        env=_admin_env(env, exported),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ticket_rows(env: dict[str, str], ticket: str, table: str = "vault.audit_log") -> list[tuple[int, str, str]]:
    """(id, action, outcome) of the rows written under `ticket`, as the owner reads `table`."""
    with as_owner(env) as conn:
        rows = conn.execute(f"SELECT id, action, outcome FROM {table} WHERE purpose = %s ORDER BY id", (ticket,))
        return [(int(i), str(action), str(outcome)) for i, action, outcome in rows]


def _values_to_reencrypt(env: dict[str, str]) -> int:
    """Stored values not under the newest data encryption key (what a reencrypt moves)."""
    with as_owner(env) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vault.tokens WHERE sealed IS NOT NULL AND dek_id <>"
            " (SELECT id FROM vault.data_keys WHERE purpose = 'encryption' AND state = 'active')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_admin_commands_rows_kept_out_of_the_chain_fail_the_command_and_audit_verify_names_them(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    tokenize_fresh_ip(own_database, vault)  # a value to re-encrypt
    vault.wait_for_checkpoint()
    with planted(own_database, _OK_ROWS_GHOSTED):
        done = _admin(own_database, exported, "reencrypt", "--reason", "CHG-17006")
        with as_owner(own_database) as conn:
            ghosts = [int(row[0]) for row in conn.execute("SELECT id FROM vault.audit_ghosts ORDER BY id")]
    assert len(ghosts) == 1, "the plant did not take the reencrypt's outcome row"
    ids = ", ".join(map(str, ghosts))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"its audit rows {ids} are not in the audit chain" in done.stderr, done.stderr
    tokenize_fresh_ip(own_database, vault)  # the vault goes on; its checkpoints are signed past the ghosts' ids
    vault.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1, printed
    assert f"audit log TAMPERED from record id {ghosts[0]}: audit rows {ids}, appended by the vault service" in printed


def test_an_admin_commands_rows_in_the_chain_are_checked_signed_and_exported_before_it_exits(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, exported = anchored
    vault.wait_for_checkpoint()
    done = _admin(own_database, exported, "rewrap", "--reason", "CHG-17007")
    assert done.returncode == 0, done.stderr
    with as_owner(own_database) as conn:
        rows = conn.execute("SELECT id FROM vault.audit_log WHERE purpose = 'CHG-17007' ORDER BY id").fetchall()
    assert len(rows) == 2, rows  # its intent row, then its outcome row
    intent, row = rows
    assert f"audit: this command's 1 intent row(s) (ids {intent[0]}) are in the chain;" in done.stdout, done.stdout
    assert f"audit: this command's 1 audit row(s) (ids {row[0]}) are in the chain;" in done.stdout, done.stdout
    if "signed and exported" in done.stdout:  # else the vault's own round signed that head first
        printed = [
            json.loads(line)["audit_checkpoint"] for line in done.stderr.splitlines() if "audit_checkpoint" in line
        ]
        assert printed and printed[-1]["head_id"] >= row[0], done.stderr
    assert any(c.head.head_id >= row[0] for c in read_exported_copy(exported).checkpoints)


def test_an_admin_commands_round_held_by_the_database_owner_fails_the_command_in_bounds_naming_its_rows(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    """The owner's hold on the segment read (a policy function trapping its timeout) held the command for ever."""
    vault, exported = anchored
    vault.wait_for_checkpoint()
    with as_owner(own_database) as owner, segment_read_held(owner):
        started = time.monotonic()
        done = _admin(own_database, exported, "rewrap", "--reason", "CHG-17008")
        took = time.monotonic() - started
    rows = _ticket_rows(own_database, "CHG-17008")
    intents = [outcome for _, _, outcome in rows]
    assert intents == [INTENT_HELD], "the rewrap was done with its intent row unchecked"
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert (
        f"refused before doing anything (no key or value was changed): its audit rows {rows[0][0]} could not be"
        " checked against the audit chain" in done.stderr
    ), done.stderr
    assert took < 6 * 2.0 + 15, f"the held round kept the command {took:.0f} s"


def test_a_command_whose_intent_row_is_kept_out_of_the_chain_is_refused_before_its_work(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    """R18-2: the key job ran first and its rows were checked only at its exit, which the operator can skip."""
    vault, exported = anchored
    tokenize_fresh_ip(own_database, vault)  # a value sealed under the data key about to be replaced
    assert _admin(own_database, exported, "rotate-encryption-key", "--reason", "CHG-18200").returncode == 0
    vault.wait_for_checkpoint()
    left = _values_to_reencrypt(own_database)
    assert left >= 1
    with planted(own_database, _OPERATOR_ROWS_GHOSTED):
        done = _admin(own_database, exported, "reencrypt", "--reason", "CHG-18201")
        ghosts = _ticket_rows(own_database, "CHG-18201", "vault.audit_ghosts")
    assert _values_to_reencrypt(own_database) == left, (
        "values were re-encrypted with the job's intent row off the record"
    )
    assert [outcome for _, _, outcome in ghosts] == [INTENT_HELD], ghosts
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert (
        f"refused before doing anything (no key or value was changed): its audit rows {ghosts[0][0]} are not in"
        " the audit chain" in done.stderr
    ), done.stderr


def test_a_command_killed_after_its_work_leaves_its_intent_row_anchored_and_exported(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    """R18-2: SIGKILLed once its work was done, the command's rows were never checked: no record of the job."""
    vault, exported = anchored
    vault.wait_for_checkpoint()
    with planted(own_database, _OK_ROWS_GHOSTED):
        running = _started_admin(own_database, exported, "rotate-encryption-key", "--reason", "CHG-18202")
        deadline = time.monotonic() + 60
        while not _ticket_rows(own_database, "CHG-18202", "vault.audit_ghosts") and running.poll() is None:
            assert time.monotonic() < deadline, "the command never wrote its outcome row"
            time.sleep(0.02)
        running.kill()  # its work is done (the outcome row is written), its exit round not
        running.communicate(timeout=30)
    on_record = _ticket_rows(own_database, "CHG-18202")
    assert [(action, outcome) for _, action, outcome in on_record] == [("rotate-encryption-key", INTENT_HELD)]
    heads = [c.head.head_id for c in read_exported_copy(exported).checkpoints]
    assert max(heads) >= on_record[0][0], "no exported checkpoint holds the intent row"


def test_a_command_sent_sigterm_runs_its_round_and_names_the_rows_it_could_not_anchor(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    """R18-1/R18-2: SIGTERM (a Job deadline, `kill`) ended the command where it stood, no id named."""
    vault, exported = anchored
    vault.wait_for_checkpoint()
    with as_owner(own_database) as owner, segment_read_held(owner):
        running = _started_admin(own_database, exported, "rewrap", "--reason", "CHG-18203")
        deadline = time.monotonic() + 60
        while not _ticket_rows(own_database, "CHG-18203") and running.poll() is None:
            assert time.monotonic() < deadline, "the command wrote no audit row"
            time.sleep(0.05)
        time.sleep(2.0)  # in its held round
        running.send_signal(signal.SIGTERM)
        _, stderr = running.communicate(timeout=30)
    rows = _ticket_rows(own_database, "CHG-18203")
    assert running.returncode == 1, (running.returncode, stderr)
    assert f"its audit rows {rows[0][0]} could not be checked against the audit chain (interrupted: SIGTERM)" in stderr
    assert [outcome for _, _, outcome in rows] == [INTENT_HELD], "the rewrap ran with its intent row unchecked"


def test_an_admin_command_never_creates_the_checkpoint_file_the_vault_appends_to(
    own_database: dict[str, str], anchored: Anchored, tmp_path: Path
) -> None:
    """Created by the operator's OS user, the file locked the vault out of it: every reveal refused (retest 17 #B)."""
    vault, _ = anchored
    vault.wait_for_checkpoint()
    absent = tmp_path / "rotated-away.jsonl"  # a fresh deployment's, or one logrotate moved away
    done = _admin(own_database, absent, "rewrap", "--reason", "CHG-17015")
    assert done.returncode == 0, done.stderr
    assert not absent.exists()
    printed = [json.loads(line)["audit_checkpoint"] for line in done.stderr.splitlines() if "audit_checkpoint" in line]
    assert printed, done.stderr  # the operator's terminal keeps the checkpoint
    assert f"the audit checkpoint file {absent} does not exist: this command does not create it" in done.stderr


def test_a_quiet_vault_exports_the_admin_commands_checkpoint_in_its_own_log(
    own_database: dict[str, str], anchored: Anchored, tmp_path: Path
) -> None:
    """The admin's checkpoint reached only the operator's terminal: the vault, quiet, never exported it (R19-2)."""
    vault, exported = anchored
    vault.wait_for_checkpoint()
    done = _admin(own_database, tmp_path / "none.jsonl", "rewrap", "--reason", "CHG-19002")
    assert done.returncode == 0, done.stderr
    with as_owner(own_database) as conn:
        row = conn.execute("SELECT max(id) FROM vault.audit_log WHERE purpose = 'CHG-19002'").fetchone()
    assert row is not None and row[0] is not None
    deadline = time.monotonic() + 10
    while max((c.head.head_id for c in read_exported_copy(exported).checkpoints), default=0) < row[0]:
        assert time.monotonic() < deadline, "the vault never exported a checkpoint covering the admin's rows"
        time.sleep(0.2)
