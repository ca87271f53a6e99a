"""The upkeep's round reads the chain segment in bounded pages, whatever the database owner puts there (review 17 #1).

The round re-read the segment from this replica's oldest unchecked row to the head in one
statement, and the other replicas' rows in full: the database owner could make either return
a huge result (a row with a megabyte purpose, hashes or reveal list; millions of rows) and
OOM-kill the replica, erasing its memory of the rows it had not checked yet. Now each read is a
page of at most SEGMENT_PAGE_ROWS rows (keyset on id), whose fields are fetched only while the
page stays within SEGMENT_PAGE_BYTES, and never for a row larger than a genuine audit row can
be (MAX_ROW_BYTES, lengths computed in the same statement): such a row is tampered, at its id.

Real PostgreSQL, a database of the module's own; the bytes each statement brings into the
process (libpq holds a whole result before a row is read) are measured at the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.own_audit_log import reveal_event, vault_pool_of_its_own
from tests.integration.result_bytes import MeasuredPool
from tests.unit.fakes import FakeAuditLog
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.domain.audit import MAX_ROW_BYTES
from vault_service.domain.segment_check import SEGMENT_PAGE_BYTES, SEGMENT_PAGE_ROWS
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.metering import RefusalAuditor, TokenizeMeter

_OTHER_ROWS = 30_000
"""Rows another replica (here: the owner, through the chain trigger) writes between this replica's two rows."""
_BOUND = SEGMENT_PAGE_BYTES + MAX_ROW_BYTES + 64 * 1024
"""The most one read of a round may bring in: a page's fields, its last row, and its rows' ids, hashes and flags."""
_HUGE = 4 * 1024 * 1024


class _Signer:
    key_name = "k"

    def sign(self, data: bytes) -> str:
        return "sig:" + data.hex()


class _Replica:
    """The service's audit log on a measured pool, and its upkeep; what its rounds found missing."""

    def __init__(self, pool: Any) -> None:
        self.measured = MeasuredPool(pool)
        self.log = PostgresAuditLog(self.measured)  # type: ignore[arg-type]  # the pool's `connection()` only
        self.missing: list[int] = []
        audit = FakeAuditLog()
        self.upkeep = AuditUpkeep(
            audit,
            self.log,
            _Signer(),
            TokenizeMeter(),
            RefusalAuditor(audit),
            lambda checkpoint: None,
            appended=self.log.appended,
            on_rows_missing=self.missing.append,
        )

    def append(self, n: int) -> int:
        """Append a reveal's row as the service does; its id."""
        self.log.append(reveal_event(n))
        return max(self.log.appended.remembered())

    def round(self) -> list[tuple[str, int]]:
        """One checkpoint round; the (statement, bytes) of its reads."""
        self.measured.results.clear()
        self.upkeep.run_once()
        return list(self.measured.results)


@pytest.fixture(scope="module")
def replica(stack_env: dict[str, str]) -> Iterator[tuple[_Replica, str]]:
    """A replica's audit log and upkeep on a migrated database of the module's own, and the owner's DSN."""
    with vault_pool_of_its_own(stack_env, "reads_bounded") as (pool, owner_dsn):
        yield _Replica(pool), owner_dsn


def _other_replicas_rows(owner_dsn: str, count: int) -> None:
    """`count` genuine rows of another client, chained by the database's own trigger."""
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome, purpose, token_types)"
            " SELECT 'replica-b', 'detokenize', 1, 'ok: 1 revealed, 0 refused', 'INC-' || n, 'ip'"
            " FROM generate_series(1, %s) AS n",
            (count,),
        )


def test_a_long_segment_is_read_in_pages_each_within_the_bound(replica: tuple[_Replica, str]) -> None:
    vault, owner_dsn = replica
    first = vault.append(0)
    _other_replicas_rows(owner_dsn, _OTHER_ROWS)
    vault.append(1)
    reads = vault.round()
    largest = max(size for _, size in reads)
    assert largest <= _BOUND, f"one read of the round brought in {largest} bytes (bound {_BOUND}) from row {first}"
    pages = [size for query, size in reads if query.startswith("WITH page")]
    assert len(pages) >= _OTHER_ROWS // SEGMENT_PAGE_ROWS, len(pages)
    assert vault.missing == [] and len(vault.log.appended) == 0  # the genuine segment holds: nothing reported


@pytest.mark.parametrize(
    ("column", "huge"),
    [
        pytest.param("purpose", f"repeat('x', {_HUGE})", id="a-huge-purpose"),
        pytest.param(
            "revealed", f"array_fill(decode(repeat('01', 16), 'hex'), ARRAY[{_HUGE // 16}])", id="a-huge-reveal-list"
        ),
        pytest.param("row_hash", f"decode(repeat('01', {_HUGE}), 'hex')", id="a-huge-row-hash"),
    ],
)
def test_a_row_larger_than_any_audit_row_is_not_fetched_and_reported_as_tampered(
    replica: tuple[_Replica, str], column: str, huge: str, caplog: pytest.LogCaptureFixture
) -> None:
    vault, owner_dsn = replica
    before = vault.append(2)
    _other_replicas_rows(owner_dsn, 1)
    after = vault.append(3)
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("SET session_replication_role = replica")  # the owner turns the log's triggers off
        owner.execute("ALTER TABLE vault.audit_log DROP CONSTRAINT IF EXISTS audit_log_row_sizes_bounded")  # 0040's
        (planted,) = owner.execute("SELECT max(id) FROM vault.audit_log WHERE client = 'replica-b'").fetchone() or (0,)
        owner.execute(f"UPDATE vault.audit_log SET {column} = {huge} WHERE id = %s", (planted,))
    with caplog.at_level(logging.ERROR):
        reads = vault.round()
    largest = max(size for _, size in reads)
    assert largest <= _BOUND, f"one read of the round brought in {largest} bytes (bound {_BOUND})"
    assert vault.missing[-1] == 2, vault.missing  # both rows of this replica: the segment vouches for neither
    assert f"ids {before}, {after}" in caplog.text and f"breaks at row {planted}" in caplog.text
