"""The vault's audit reports over a log longer than the old row bound: streamed, in bounded memory (review 30, R30-1).

Real OpenBao and Postgres, one database of the module's own: 150 000 production-shaped rows (a
certificate serial and digest, one token's keyed hash, a case purpose), chained by the database's
own trigger, more than the 120 000 the vault refused before (it held the whole log in memory, ~2.1 KB
a row). The security team's Verify and WhoSaw answer over it, the vault's peak memory (VmHWM; the
vault runs in this process) growing by less than STREAMED_PEAK_BYTES; tampering is found wherever it is
(a row early in the log, a row in its last page, a row deleted at a page boundary), and who-saw lists
the token's reveals from anywhere in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.audit_attacks import as_owner
from tests.integration.own_database import database_of_its_own
from tokenvault_client import TokenType, VaultClient
from vault_service.adapters.postgres.audit_chain import RECORD_PAGE_ROWS
from vault_service.service.revealing import reveal_hash

SECURITY_TEAM = "security-team"
ROWS = 150_000
"""Rows planted: more than the old TOKENVAULT_AUDIT_REPORT_MAX_ROWS (120 000), which refused the report."""
PLANTED_REVEALS = (7, 75_001, ROWS - 3)
"""Where among the planted rows the watched token's reveals are (its first, middle and last page)."""
STREAMED_PEAK_BYTES = 64 * 1024 * 1024
"""The most a report over the long log may add to the vault's peak memory (held whole: ~2.1 KB a row, ~300 MB)."""


@dataclass(frozen=True)
class LongLog:
    env: dict[str, str]
    vault: RunningVault
    watched: str
    """A token revealed by the analyst through the API and at PLANTED_REVEALS among the planted rows."""


def _planted_rows(env: dict[str, str], token_hash: bytes) -> None:
    """ROWS reveals of other tokens, PLANTED_REVEALS of `token_hash`'s, chained by the database's own trigger."""
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome, purpose, token_types,"
            " client_serial, client_cert_sha256, revealed)"
            " SELECT 'analyst-b', 'detokenize', 1, 'ok: 1 revealed, 0 refused', 'CASE-' || n, 'ip',"
            " '5f3a9c0e1b7d', encode(sha256(n::text::bytea), 'hex'),"
            " ARRAY[CASE WHEN n = ANY(%s) THEN %s::bytea ELSE substring(sha256(n::text::bytea) from 1 for 16) END]"
            " FROM generate_series(1, %s) AS n",
            (list(PLANTED_REVEALS), token_hash, ROWS),
        )


@pytest.fixture(scope="module")
def long_log(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LongLog]:
    checkpoints = tmp_path_factory.mktemp("long-log") / "checkpoints.jsonl"
    with (
        database_of_its_own(stack_env, "long_log", migrated=True, checkpoint_file=checkpoints) as env,
        running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault,  # the default row bound
    ):
        with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
            (token,) = etl.tokenize([(TokenType.IP, "10.92.0.1")])
        watched = str(token)
        _planted_rows(env, reveal_hash(vault.wired.keys.ring.audit_key, watched))
        with VaultClient.connect(vault.address, stack_identity(env, "analyst")) as analyst:
            analyst.detokenize([watched], "CASE-9201")
        vault.wait_for_checkpoint(60)
        yield LongLog(env, vault, watched)


def _memory_kb(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert found is not None
    return int(found.group(1))


def _nth_id(env: dict[str, str], position: int) -> int:
    """The id of the log's `position`-th row (1: the first)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT id FROM vault.audit_log ORDER BY id OFFSET %s LIMIT 1", (position - 1,)).fetchone()
    assert row is not None
    return int(row[0])


def _verify(log: LongLog) -> tuple[bool, int, str, list[str]]:
    with VaultClient.connect(log.vault.address, stack_identity(log.env, SECURITY_TEAM)) as security:
        verdict = security.audit_verify(deadline=120)
    return verdict.intact, verdict.first_row, verdict.finding, list(verdict.lines)


def test_a_log_longer_than_the_old_bound_is_verified_in_bounded_memory(long_log: LongLog) -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from what is resident now
    resident = _memory_kb("VmRSS")

    intact, first_row, finding, lines = _verify(long_log)

    grown = (_memory_kb("VmHWM") - resident) * 1024
    assert intact and first_row == 0 and finding == "", lines
    (said,) = [line for line in lines if line.startswith("audit log intact")]
    rows = int(said.split(": ")[1].split(" record(s)")[0])
    assert rows > ROWS
    assert grown < STREAMED_PEAK_BYTES, f"the report over {rows} rows took the vault's peak up by {grown} bytes"


def test_who_saw_over_the_long_log_lists_the_reveals_from_its_every_part(long_log: LongLog) -> None:
    Path("/proc/self/clear_refs").write_text("5")
    resident = _memory_kb("VmRSS")
    with VaultClient.connect(long_log.vault.address, stack_identity(long_log.env, SECURITY_TEAM)) as security:
        verdict, rows = security.audit_who_saw(long_log.watched, purpose="INC-9201", deadline=120)

    grown = (_memory_kb("VmHWM") - resident) * 1024
    assert verdict.intact
    assert [(r.action, r.client, r.purpose) for r in rows] == [
        *[("detokenize", "analyst-b", f"CASE-{n}") for n in PLANTED_REVEALS],
        ("detokenize", "analyst", "CASE-9201"),
    ]
    assert grown < STREAMED_PEAK_BYTES, f"who-saw took the vault's peak up by {grown} bytes"


@pytest.mark.parametrize("where", ["early", "last-page"])
def test_a_row_changed_anywhere_in_the_long_log_is_named(long_log: LongLog, where: str) -> None:
    env = long_log.env
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.audit_log").fetchone()
    assert row is not None
    target = _nth_id(env, 10 if where == "early" else int(row[0]) - 2)  # the newest rows: the last page
    with as_owner(env) as owner:
        owner.execute("UPDATE vault.audit_log SET purpose = purpose || '-x' WHERE id = %s", (target,))
        try:
            intact, first_row, finding, lines = _verify(long_log)
        finally:
            owner.execute("UPDATE vault.audit_log SET purpose = left(purpose, -2) WHERE id = %s", (target,))

    assert not intact and first_row == target and "hash chain breaks" in finding
    assert any(line.startswith(f"audit log TAMPERED from record id {target}") for line in lines)


def test_a_row_deleted_at_a_page_boundary_is_named(long_log: LongLog) -> None:
    env = long_log.env
    deleted, after = _nth_id(env, RECORD_PAGE_ROWS + 1), _nth_id(env, RECORD_PAGE_ROWS + 2)  # the 2nd page's first
    with as_owner(env) as owner:
        owner.execute("CREATE TEMP TABLE kept AS SELECT * FROM vault.audit_log WHERE id = %s", (deleted,))
        owner.execute("DELETE FROM vault.audit_log WHERE id = %s", (deleted,))
        try:
            intact, first_row, finding, _ = _verify(long_log)
        finally:
            owner.execute("INSERT INTO vault.audit_log SELECT * FROM kept")

    assert not intact and first_row == after and "hash chain breaks" in finding  # the page after starts broken
    assert _verify(long_log)[0]  # put back: intact again
