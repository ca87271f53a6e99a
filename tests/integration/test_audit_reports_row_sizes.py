"""The audit reports are bounded in bytes, not only in rows (attack 28, F3).

The serving role INSERTs audit rows by design, and nothing bounded their size: a few rows of
100 MB (an outcome, a purpose, a reveal list) took the vault past its 1 GiB limit during one report,
whose pages were 500 rows whatever their bytes. Now (a) migration 0040 refuses the serving role
any row larger than the vault writes, and (b) a report never reads such a row, which only the
database's owner can still store (dropping the constraint): it is TAMPERED at that row, named,
recorded, and the vault's peak memory (VmHWM; the vault runs in this process) barely moves.

Real OpenBao and Postgres, a database and vault of the module's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.own_database import database_of_its_own
from tokenvault_client import TokenType, VaultClient

SECURITY_TEAM = "security-team"
FAT_ROWS = 3
FAT_BYTES = 40 * 1024 * 1024
"""Each planted row's outcome: 3 x 40 MB, read whole by the old report (its peak up by ~2x that)."""
PEAK_BOUND = 32 * 1024 * 1024
"""The most a report over the fat rows may add to the vault's peak memory."""


@dataclass(frozen=True)
class Vault:
    env: dict[str, str]
    vault: RunningVault


@pytest.fixture(scope="module")
def own_vault(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    checkpoints = tmp_path_factory.mktemp("row-sizes") / "checkpoints.jsonl"
    with (
        database_of_its_own(stack_env, "row_sizes", migrated=True, checkpoint_file=checkpoints) as env,
        running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault,
    ):
        with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
            etl.tokenize([(TokenType.IP, "10.93.0.1")])
        vault.wait_for_checkpoint(60)
        yield Vault(env, vault)


def _memory_kb(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert found is not None
    return int(found.group(1))


@pytest.mark.parametrize(
    ("column", "fat"),
    [
        pytest.param("outcome", "'ok: ' || repeat('x', 1048576)", id="a-1-MB-outcome"),
        pytest.param("purpose", "repeat('x', 300)", id="a-300-byte-purpose"),
        pytest.param("client", "repeat('x', 2000)", id="a-2-kB-client"),
        pytest.param(
            "revealed", "array_fill(decode(repeat('01', 16), 'hex'), ARRAY[10001])", id="10001-revealed-hashes"
        ),
        pytest.param("revealed", "ARRAY[decode(repeat('01', 300000), 'hex')]", id="one-300-kB-revealed-hash"),
    ],
)
def test_the_serving_role_cannot_insert_an_audit_row_larger_than_the_vault_writes(
    own_vault: Vault, column: str, fat: str
) -> None:
    defaults = {"client": "'analyst'", "action": "'detokenize'", "item_count": "1", "outcome": "'ok: 1 revealed'"}
    values = {**defaults, column: fat}
    with psycopg.connect(own_vault.env["PG_VAULT_DSN"], autocommit=True) as serving:
        with pytest.raises(psycopg.errors.CheckViolation, match="audit_log_row_sizes_bounded"):
            serving.execute(f"INSERT INTO vault.audit_log ({', '.join(values)}) VALUES ({', '.join(values.values())})")
        # what the vault writes still goes in
        serving.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome, purpose, revealed)"
            " VALUES ('analyst', 'detokenize', 10000, 'ok: 10000 revealed', repeat('é', 64),"
            " array_fill(decode(repeat('01', 16), 'hex'), ARRAY[10000]))"
        )


def test_a_report_over_rows_the_owner_planted_larger_than_any_the_vault_writes_names_them_in_bounded_memory(
    own_vault: Vault,
) -> None:
    env = own_vault.env
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:  # the owner can drop the constraint
        owner.execute("ALTER TABLE vault.audit_log DROP CONSTRAINT IF EXISTS audit_log_row_sizes_bounded")
        planted = [
            int(row[0])
            for row in owner.execute(
                "INSERT INTO vault.audit_log (client, action, item_count, outcome)"
                " SELECT 'analyst', 'detokenize', 1, 'ok: ' || repeat('x', %s) FROM generate_series(1, %s)"
                " RETURNING id",
                (FAT_BYTES, FAT_ROWS),
            ).fetchall()
        ]
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from what is resident now
    resident = _memory_kb("VmRSS")

    with VaultClient.connect(own_vault.vault.address, stack_identity(env, SECURITY_TEAM)) as security:
        verdict = security.audit_verify(deadline=120)
        who_saw, rows = security.audit_who_saw("ip_" + "A" * 22, purpose="INC-4821", deadline=120)

    grown = (_memory_kb("VmHWM") - resident) * 1024
    first = min(planted)
    print(f"reports over {FAT_ROWS} rows of {FAT_BYTES} bytes: the vault's peak grew by {grown} bytes")
    assert grown < PEAK_BOUND, f"the reports over {FAT_ROWS} rows of {FAT_BYTES} bytes grew the peak by {grown} bytes"
    assert not verdict.intact and verdict.first_row == first, list(verdict.lines)
    assert f"record {first} holds" in verdict.finding and "more than any row the vault writes" in verdict.finding
    assert not who_saw.intact and who_saw.first_row == first and rows == []
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        outcomes = [
            str(o)
            for (o,) in conn.execute(
                "SELECT outcome FROM vault.audit_log WHERE action IN ('audit-verify', 'who-saw') AND id > %s"
                " ORDER BY id",
                (max(planted),),
            ).fetchall()
        ]
    assert outcomes == [f"ok: not verified from record id {first}, {verdict.rows} record(s)", outcomes[1]]
    assert outcomes[1].startswith(f"ok: not verified from record id {first}")
