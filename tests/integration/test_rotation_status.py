"""`status` counts the work a rotation leaves, on real OpenBao and Postgres.

On a migrated database of its own: the session's database holds every other test's tokens by
now, and re-indexing all of them cost CI about 25 s to check what 50 values check as well.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import vault_config
from tests.integration.own_database import database_of_its_own
from vault_service.bootstrap import Bootstrapped
from vault_service.bootstrap import bootstrap as vault_bootstrap
from vault_service.domain.token_types import TokenType


@pytest.fixture
def own_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's settings pointed at a migrated database of this test's own."""
    with database_of_its_own(stack_env, "rotation_status", migrated=True) as env:
        yield env


@pytest.fixture
def serving(own_env: dict[str, str]) -> Iterator[Bootstrapped]:
    """The serving vault's wiring on the test's database."""
    wired = vault_bootstrap(vault_config(own_env))
    try:
        yield wired
    finally:
        wired.close()


@pytest.fixture
def admin(own_env: dict[str, str], serving: Bootstrapped) -> Iterator[Bootstrapped]:
    """The security team's tooling on the same database: a wiring of its own."""
    wired = vault_bootstrap(vault_config(own_env))
    try:
        yield wired
    finally:
        wired.close()


def live_fingerprints(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.tokens WHERE fingerprint IS NOT NULL").fetchone()
    assert row is not None
    return int(row[0])


def test_status_counts_every_value_a_pending_fingerprint_key_must_reindex(
    own_env: dict[str, str], serving: Bootstrapped, admin: Bootstrapped
) -> None:
    serving.vault.tokenize("etl-service", [(TokenType.IP, f"10.201.0.{i}") for i in range(50)])
    rotation = admin.rotation("admin:test-status")
    assert rotation.status().rows_to_reindex == 0
    rotation.rotate_fingerprint_key("CHG-STATUS")
    before = rotation.status().rows_to_reindex
    assert before == live_fingerprints(own_env) >= 50  # it said 0 here before the fix
    assert rotation.reindex("CHG-STATUS") == before
    assert rotation.status().rows_to_reindex == 0


class _Crash(Exception):
    """What stops the re-index part-way here (chaos 50: a PostgreSQL crash after ~21 batches)."""


def test_after_a_reindex_stopped_part_way_status_counts_only_the_rows_it_has_not_reached(
    own_env: dict[str, str], serving: Bootstrapped, admin: Bootstrapped
) -> None:
    """Chaos 50, V50-5: `status` said every value was still to re-index after a re-index stopped part-way, and the
    re-run's progress bar (whose total that count is) ended `finished` at 89 %."""
    serving.vault.tokenize("etl-service", [(TokenType.IP, f"10.202.0.{i}") for i in range(60)])
    rotation = admin.rotation("admin:test-status")
    rotation.rotate_fingerprint_key("CHG-STATUS-RESUME")
    live = live_fingerprints(own_env)
    batches: list[int] = []

    def crash_after_two_batches(phase: str, done: int) -> None:
        batches.append(done)
        if len(batches) == 2:
            raise _Crash

    with pytest.raises(_Crash):
        rotation.reindex("CHG-STATUS-RESUME", batch_size=10, progress=crash_after_two_batches)
    status = rotation.status()
    assert status.rows_to_reindex == live - 20  # it said `live` here before the fix
    assert status.rows_to_compact == live  # nothing is in place under the new key yet
    rerun: dict[str, int] = {}

    def count(phase: str, done: int) -> None:
        rerun[phase] = rerun.get(phase, 0) + done

    assert rotation.reindex("CHG-STATUS-RESUME", batch_size=10, progress=count) == status.rows_to_reindex
    assert rerun["reindex"] == status.rows_to_reindex and rerun["compact"] == status.rows_to_compact  # bars end full
    after = rotation.status()
    assert (after.rows_to_reindex, after.rows_to_compact) == (0, 0)
