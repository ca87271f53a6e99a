"""A round whose chain read the database makes wait fails within the upkeep's statement timeout (review 17, #2).

The database owner can make the upkeep's segment read wait without end (a `pg_sleep` in a view's
function, or a lock on its path): a hanging round was neither counted nor alerted on
(AuditUpkeepFailing). The reads now run under `upkeep_statement_timeout` (5 intervals in the
service), so they raise, and the round is counted as failed.

Real PostgreSQL, a database of the module's own: the owner holds an ACCESS EXCLUSIVE lock on
vault.audit_log while the upkeep's reads run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.integration.own_audit_log import audit_log_of_its_own
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.domain.errors import VaultError


@pytest.fixture(scope="module")
def audit_log(stack_env: dict[str, str]) -> Iterator[tuple[PostgresAuditLog, str]]:
    """The service's audit log on a migrated database of the module's own (2 rows appended), and the owner's DSN."""
    with audit_log_of_its_own(stack_env, "read_timeout", 2) as own:
        yield own


@pytest.mark.parametrize("own", [False, True], ids=["rows-to-hash", "own-rows"])
def test_an_upkeep_read_the_database_makes_wait_raises_within_its_timeout(
    audit_log: tuple[PostgresAuditLog, str], own: bool
) -> None:
    log, owner_dsn = audit_log
    head = log.head()
    assert head is not None
    appended = [(row_id, link[1]) for row_id, link in log.appended.remembered().items()] if own else []
    read: Callable[[], object] = lambda: log.segment(0, head, appended, 256)  # noqa: E731
    log.upkeep_statement_timeout = 0.5
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(read())
        except VaultError as error:
            outcome.append(error)

    with psycopg.connect(owner_dsn) as owner:
        owner.execute("LOCK TABLE vault.audit_log IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        reader = threading.Thread(target=run, daemon=True)
        reader.start()
        reader.join(timeout=5)
        waited = time.monotonic() - started
        owner.rollback()  # the lock goes: a read that still waits ends now
    reader.join(timeout=5)
    assert waited < 5, "the read waited on the lock past its timeout"
    assert len(outcome) == 1 and isinstance(outcome[0], VaultError), outcome
