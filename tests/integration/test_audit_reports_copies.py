"""The copies an audit report reads: a caller's only adds evidence, a malformed one is refused, recorded (attack 28).

Real OpenBao and Postgres, a database and vault of the module's own exporting its checkpoints to a
file. F1: a crafted copy (deeply nested JSON, a checkpoint time at `datetime`'s edge) was an
UNKNOWN status, a traceback and no audit row; now INVALID_ARGUMENT naming the line (never its
text), recorded. F6: the vault's copy is named "the vault's exported checkpoint copy" to a caller,
never by its path. F5: a copy sent replaced the vault's own, so a stale one passed a log whose
newest rows and checkpoint the owner had deleted; now both are read, and the deletion is found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.audit_attacks import as_owner
from tests.integration.own_database import database_of_its_own
from tokenvault_client import TokenType, VaultClient, VaultClientError

SECURITY_TEAM = "security-team"
VAULTS_COPY = "the vault's exported checkpoint copy"


@dataclass(frozen=True)
class Vault:
    env: dict[str, str]
    vault: RunningVault
    file: Path


@pytest.fixture(scope="module")
def own_vault(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    checkpoints = tmp_path_factory.mktemp("copies") / "checkpoints.jsonl"
    with (
        database_of_its_own(stack_env, "copies", migrated=True, checkpoint_file=checkpoints) as env,
        running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault,
    ):
        with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
            etl.tokenize([(TokenType.IP, "10.94.0.1")])
        vault.wait_for_checkpoint(60)
        yield Vault(env, vault, checkpoints)


def _security(vault: Vault) -> VaultClient:
    return VaultClient.connect(vault.vault.address, stack_identity(vault.env, SECURITY_TEAM))


def _outcomes(env: dict[str, str], after: int) -> list[str]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT outcome FROM vault.audit_log WHERE action = 'audit-verify' AND id > %s ORDER BY id", (after,)
        ).fetchall()
    return [str(o) for (o,) in rows]


def _newest_id(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()
    return int(row[0]) if row else 0


def _checkpoint_line(vault: Vault, at: str) -> bytes:
    """The newest checkpoint line of the vault's checkpoint file, its time replaced by `at`."""
    record = [r for r in map(json.loads, vault.file.read_text().splitlines()) if "head_id" in r][-1]
    record["at"] = at
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    "crafted",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-100000-deep"),
        pytest.param(b'{"log":' * 5_000, id="wrapped-5000-deep"),
        pytest.param("edge-of-time", id="checkpoint-at-datetime's-last-instant"),
        pytest.param("start-of-time", id="checkpoint-at-datetime's-first-instant"),
    ],
)
def test_a_crafted_copy_is_refused_invalid_argument_on_the_record_naming_its_line(
    own_vault: Vault, crafted: bytes | str
) -> None:
    if crafted == "edge-of-time":
        crafted = b"not a checkpoint\n" + _checkpoint_line(own_vault, "9999-12-31T23:59:59-14:00")
        line = 2
    elif crafted == "start-of-time":
        crafted = _checkpoint_line(own_vault, "0001-01-01T00:00:00+14:00")
        line = 1
    else:
        line = 1
    assert isinstance(crafted, bytes)
    before = _newest_id(own_vault.env)
    time.sleep(1.1)  # refusals are audited up to a rate per peer
    with _security(own_vault) as security, pytest.raises(VaultClientError) as refused:
        security.audit_verify(exported_copy=crafted)

    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details
    assert f"(line {line})" in refused.value.details and "the exported checkpoint copy sent" in refused.value.details
    assert not any(text in refused.value.details for text in ("9999-12", "0001-01", "[[", '{"log"'))  # never its text
    assert _outcomes(own_vault.env, before) == ["refused: InvalidRequest"]


def test_the_vaults_own_copy_is_named_to_the_caller_never_by_its_path(own_vault: Vault) -> None:
    with _security(own_vault) as security:
        verdict = security.audit_verify()
        who_saw, _ = security.audit_who_saw("ip_" + "B" * 22, purpose="INC-4821")

    for lines in (verdict.lines, who_saw.lines):
        assert str(own_vault.file.parent) not in "\n".join(lines)
        assert any(f"exported checkpoint(s) read from {VAULTS_COPY}, newest at row" in line for line in lines), lines


def test_a_stale_copy_sent_does_not_hide_the_newest_rows_and_checkpoint_the_owner_deleted(own_vault: Vault) -> None:
    env, vault = own_vault.env, own_vault.vault
    vault.wait_for_checkpoint(60)
    stale = own_vault.file.read_bytes()  # what a lagging shipper or a covering colleague hands the team
    stale_head = max(json.loads(line).get("head_id", 0) for line in stale.decode().splitlines())
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        etl.tokenize([(TokenType.IP, "10.94.0.2")])  # the rows the owner will delete
    vault.wait_for_checkpoint(60)
    deadline = time.monotonic() + 30
    while max(json.loads(line).get("head_id", 0) for line in own_vault.file.read_text().splitlines()) <= stale_head:
        assert time.monotonic() < deadline, "the vault exported no newer checkpoint"
        time.sleep(0.2)
    with as_owner(env) as owner:
        owner.execute("DELETE FROM vault.audit_log WHERE id > %s", (stale_head,))
        owner.execute("DELETE FROM vault.audit_checkpoints WHERE head_id > %s", (stale_head,))

    with _security(own_vault) as security:
        verdict = security.audit_verify(exported_copy=stale, max_copy_lag=86_400)

    assert not verdict.intact, list(verdict.lines)
    assert "no longer has" in verdict.finding, verdict.finding
    assert any(f"read from the-copy-sent-with-the-call and {VAULTS_COPY}" in line for line in verdict.lines), (
        verdict.lines
    )
    assert str(own_vault.file.parent) not in "\n".join(verdict.lines)
