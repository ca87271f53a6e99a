"""The exported checkpoint file after a write the disk could not take (chaos 50, V50-1).

Real OpenBao and PostgreSQL, `python -m vault_service` in a process of its own, exporting its
checkpoints every second to a file. The disk filling is the vault process's file size limit
(RLIMIT_FSIZE, set with prlimit) lowered to just above the file's size: the next line's write
stores part of it and fails, as ENOSPC does. Before the fix the part stayed, with no newline, the
next checkpoint was appended onto it, and every `audit verify` was refused ("cut short") for good.
A line a crash of the host cut short is planted by hand: the next checkpoint must stand alone.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.procs import stop_pid
from tests.conftest import stack_identity
from tests.integration.conftest import start_vault_process
from tests.integration.fresh_values import fresh_value
from tests.integration.own_database import database_of_its_own
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import AuditVerdict, TokenType, VaultClient

IP = TokenType.IP


@pytest.fixture
def exporting_vault(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], str, int, Path]]:
    """A vault process on a database of its own, checkpointing every second into a file: (env, address, pid, file)."""
    checkpoints = tmp_path / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "diskfull", migrated=True, checkpoint_file=checkpoints) as env:
        address, pid = start_vault_process(env, tmp_path / "vault.log", TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1")
        try:
            yield env, address, pid, checkpoints
        finally:
            stop_pid(pid)


def _reveal(env: dict[str, str], address: str, purposes: list[str]) -> None:
    """One reveal per purpose of a fresh token: audit rows for the next checkpoints to cover."""
    with VaultClient.connect(address, stack_identity(env, "etl-service")) as etl:
        tokens = [str(t) for t in etl.tokenize([(IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(2)])]
    with VaultClient.connect(address, stack_identity(env, "analyst")) as analyst:
        for purpose in purposes:
            analyst.detokenize(tokens, purpose)


def _newest_head(path: Path) -> int:
    """The highest checkpoint head among the file's lines that read as JSON."""
    heads = [0]
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            heads.append(int(json.loads(line).get("head_id", 0)))
        except ValueError:
            continue
    return max(heads)


def _wait_for_a_checkpoint_above(path: Path, head: int) -> None:
    deadline = time.monotonic() + 15
    while _newest_head(path) <= head:
        assert time.monotonic() < deadline, "no new checkpoint line was exported"
        time.sleep(0.2)


def _verdict(env: dict[str, str], address: str) -> AuditVerdict:
    """The vault's `audit verify` against its own exported copy, as the security team asks for it."""
    with VaultClient.connect(address, stack_identity(env, "security-team")) as team:
        return team.audit_verify()


def test_a_line_the_full_disk_cut_short_is_taken_back_and_the_copy_still_verifies(
    exporting_vault: tuple[dict[str, str], str, int, Path],
) -> None:
    env, address, pid, checkpoints = exporting_vault
    _reveal(env, address, ["CASE-DISK-1", "CASE-DISK-2"])
    _wait_for_a_checkpoint_above(checkpoints, 0)
    size = checkpoints.stat().st_size
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))  # the disk is full
    try:
        _reveal(env, address, ["CASE-DISK-3", "CASE-DISK-4"])  # rows for a line that does not fit
        time.sleep(3)  # rounds fail to export meanwhile
        assert checkpoints.stat().st_size == size, "a failed write left part of its line in the file"
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    head = _newest_head(checkpoints)
    _reveal(env, address, ["CASE-DISK-5"])
    _wait_for_a_checkpoint_above(checkpoints, head)
    lines = checkpoints.read_text().splitlines()
    assert all(json.loads(line) for line in lines), "a line of the file is not whole"
    verdict = _verdict(env, address)  # refused "cut short" before the fix, for good
    assert verdict.intact and verdict.checkpoints > 0, verdict.lines


def test_a_line_a_host_crash_cut_short_does_not_swallow_the_next_checkpoint(
    exporting_vault: tuple[dict[str, str], str, int, Path],
) -> None:
    env, address, _, checkpoints = exporting_vault
    _reveal(env, address, ["CASE-CUT-1"])
    _wait_for_a_checkpoint_above(checkpoints, 0)
    whole = checkpoints.read_text().splitlines()
    with checkpoints.open("a") as file:  # what a crash mid-write leaves: the start of a line, no newline
        file.write(whole[-1][:50])
    head = _newest_head(checkpoints)
    _reveal(env, address, ["CASE-CUT-2"])
    _wait_for_a_checkpoint_above(checkpoints, head)  # read whole: not glued onto the cut line
    lines = checkpoints.read_text().splitlines()
    assert lines[len(whole)] == whole[-1][:50]  # the cut line stands alone, as it was left
    assert all(json.loads(line) for line in lines[len(whole) + 1 :])
