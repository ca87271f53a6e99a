"""The vault schema manifest was generated from the migration files shipped (no database needed).

A migration added or changed after the manifest was generated fails here first, naming the script; the
integration test (test_vault_schema_manifest.py) checks the manifest against a fresh migration run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vault_service.domain.schema_guards import how_it_differs, schema_differences
from vault_service.domain.vault_schema_manifest import MIGRATIONS_SHA256

ROOT = Path(__file__).resolve().parents[2]


def test_the_manifest_was_generated_from_the_migrations_shipped() -> None:
    spec = importlib.util.spec_from_file_location("gen_manifest", ROOT / "scripts" / "gen_vault_schema_manifest.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.migrations_digest() == MIGRATIONS_SHA256, (
        "migrations/ changed since vault_schema_manifest.py was generated: run"
        " `python scripts/gen_vault_schema_manifest.py --dsn <superuser DSN of a freshly migrated database>`"
    )


def test_each_difference_is_named_missing_added_or_changed() -> None:
    expected = {
        "constraint a on vault.t": {"validation": "validated"},
        "trigger b on vault.t": {"state": "enabled"},
        "function vault.f()": {"definition": "sha256:3"},
    }
    found = {
        "trigger b on vault.t": {"state": "enabled"},
        "function vault.f()": {"definition": "sha256:x"},
        "trigger c on vault.t": {"state": "enabled"},
    }
    assert schema_differences(found, expected) == (
        "constraint a on vault.t is missing (a migration defines it)",
        "function vault.f() differs from its migration's definition: definition differs (now sha256 x)",
        "trigger c on vault.t is in no migration",
    )
    assert schema_differences(expected, expected) == ()


def test_a_changed_guard_says_which_fields_moved_and_from_what() -> None:
    expected = {
        "state": "enabled",
        "timing": "AFTER",
        "deferral": "not deferrable",
        "default": "none",
        "definition": "sha256:aa",
    }
    found = {**expected, "state": "disabled", "deferral": "deferrable, initially deferred", "default": "sha256:bb"}
    assert how_it_differs(found, expected) == (
        "state disabled (migrations: enabled); deferral deferrable, initially deferred (migrations: not deferrable);"
        " default differs (now sha256 bb)"
    )
    assert how_it_differs({"state": "enabled", "extra": "x"}, {"state": "enabled"}) == "extra x (migrations: absent)"


def test_a_column_s_not_null_dropped_or_added_is_said_in_words() -> None:
    """Walk 47, W47-12: a dropped NOT NULL was said "null nullable (migrations: NOT NULL)"."""
    expected = {"type": "text", "null": "NOT NULL"}
    assert how_it_differs({**expected, "null": "nullable"}, expected) == "NOT NULL dropped (migrations: NOT NULL)"
    assert how_it_differs(expected, {**expected, "null": "nullable"}) == "NOT NULL added (migrations: nullable)"
