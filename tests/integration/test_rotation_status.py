"""`status` counts the work a rotation leaves, on real OpenBao and Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import RunningVault, vault_config
from vault_service.bootstrap import Bootstrapped
from vault_service.bootstrap import bootstrap as vault_bootstrap
from vault_service.domain.token_types import TokenType


@pytest.fixture
def admin(stack_env: dict[str, str]) -> Iterator[Bootstrapped]:
    wired = vault_bootstrap(vault_config(stack_env))
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
    stack_env: dict[str, str], vault: RunningVault, admin: Bootstrapped
) -> None:
    vault.wired.vault.tokenize("etl-service", [(TokenType.IP, f"10.201.0.{i}") for i in range(50)])
    rotation = admin.rotation("admin:test-status")
    assert rotation.status().rows_to_reindex == 0
    rotation.rotate_fingerprint_key("CHG-STATUS")
    before = rotation.status().rows_to_reindex
    assert before == live_fingerprints(stack_env) >= 50  # it said 0 here before the fix
    assert rotation.reindex("CHG-STATUS") == before
    assert rotation.status().rows_to_reindex == 0
