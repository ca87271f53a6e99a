"""A tampered audit row whose time Python cannot hold is named by audit verify (attack 16, finding 4).

The database owner can set a row's `at` to `infinity`, `-infinity`, a date BC or after the year
9999: PostgreSQL holds them, psycopg cannot load them into a `datetime`, so the verifier's read
(`records`) and the upkeep's (`segment`) raised StorageError (DataError) as a whole: audit
verify, who-saw and the checkpoint round failed without naming the row. The vault never writes
such a time (the chain trigger stamps each row with the database's clock), so the row is tampered:
it is read with a marker for its time and reported as the first broken record, by its id.

Real PostgreSQL, a database of the module's own: rows appended through the service's append (the
chain trigger as it is), then one row's time changed by the owner with the triggers off
(`session_replication_role = replica`), and put back after each case.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.own_audit_log import audit_log_of_its_own
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.domain.checkpoints import verify_log

_ROWS = 5


@pytest.fixture(scope="module")
def audit_log(stack_env: dict[str, str]) -> Iterator[tuple[PostgresAuditLog, str]]:
    """The service's audit log on a migrated database of the module's own (_ROWS rows appended), and the owner's DSN."""
    with audit_log_of_its_own(stack_env, "time_range", _ROWS) as own:
        yield own


@pytest.mark.parametrize(
    ("at", "position"),
    [
        pytest.param("infinity", -1, id="infinity-at-the-head"),
        pytest.param("-infinity", 0, id="minus-infinity-at-the-first-row"),
        pytest.param("0044-03-15 00:00:00+00 BC", 2, id="a-date-bc"),
        pytest.param("12345-06-07 00:00:00+00", 1, id="after-the-year-9999"),
    ],
)
def test_a_row_whose_time_is_out_of_range_is_named_as_the_first_broken_one(
    audit_log: tuple[PostgresAuditLog, str], at: str, position: int
) -> None:
    log, owner_dsn = audit_log
    genuine_records = log.records()
    assert verify_log(genuine_records, [], [], lambda data, signature: True) is None
    row = genuine_records[position].record_id
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("SET session_replication_role = replica")  # the owner turns the log's triggers off
        (genuine,) = owner.execute("SELECT at FROM vault.audit_log WHERE id = %s", (row,)).fetchone() or (None,)
        owner.execute("UPDATE vault.audit_log SET at = %s::timestamptz WHERE id = %s", (at, row))
        try:
            records = log.records()  # before: StorageError (DataError), no row named
            finding = verify_log(records, [], [], lambda data, signature: True)
            head = log.head()
            assert head is not None
            hashed_by_the_upkeep = log.segment(row - 1, head, [], 1)  # the checkpoint round's read of rows to hash
        finally:
            owner.execute("UPDATE vault.audit_log SET at = %s WHERE id = %s", (genuine, row))
    assert len(records) == _ROWS
    assert finding is not None and finding.first_row == row, finding
    assert "time" in finding.reason, finding.reason
    assert [r.record_id for r in hashed_by_the_upkeep] == [row] and hashed_by_the_upkeep[0].record is not None
    assert verify_log(log.records(), [], [], lambda data, signature: True) is None  # put back: intact again
