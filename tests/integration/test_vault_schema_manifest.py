"""The vault schema manifest is that of a fresh migration run (as the generated protos are checked fresh).

`audit verify` compares the live database's guards with vault_service/domain/vault_schema_manifest.py
(attack 43); a manifest behind the migrations would be a false alarm at every verify, one ahead would hide a
change. Read as the vault's own role reads it, on a database the migrations alone just made.
"""

from __future__ import annotations

import psycopg

from tests.integration.audit_attacks import own_database
from vault_service.adapters.postgres.schema_catalog import read_vault_schema
from vault_service.domain.schema_guards import schema_differences
from vault_service.domain.vault_schema_manifest import EXPECTED

__all__ = ["own_database"]


def test_the_manifest_is_what_a_fresh_migration_run_leaves(own_database: dict[str, str]) -> None:
    with psycopg.connect(own_database["PG_VAULT_DSN"], autocommit=True) as conn:
        found = read_vault_schema(conn)
    assert schema_differences(found, EXPECTED) == (), (
        "vault_schema_manifest.py is stale: run `python scripts/gen_vault_schema_manifest.py --dsn <superuser DSN of"
        " a freshly migrated database>`"
    )
