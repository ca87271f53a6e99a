"""The schema check builds what it compares in Python from raw catalog columns, grants and owners included
(attack 45, A45-4 and the gaps it listed).

A45-4: `pg_catalog.format(text, text, "char")` - an exact match for the check's SQL
`format('%s enabled %s', pg_get_triggerdef(oid), tgenabled)` - printed every trigger 'enabled O': a disabled
`tokens_erasure_counted` (erasures no longer move the mark replicas clear their token cache on) passed verify.
The check's strings are now joined in Python from `pg_get_triggerdef` and `tgenabled` themselves. Not compared
before at all: grants and owners (`GRANT UPDATE ON vault.tokens TO tokenvault_vault` gives the service's own role
unaudited writes), column types and NOT NULL. Real OpenBao and PostgreSQL, a database of each test's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2

__all__ = ["own_database"]

FORGED_FORMAT = (  # attack 45's
    'CREATE FUNCTION pg_catalog.format(text, text, "char") RETURNS text LANGUAGE sql IMMUTABLE'
    " SET search_path = pg_catalog AS $$ SELECT CASE WHEN $1 = '%s enabled %s' THEN $2 || ' enabled O'"
    " ELSE format($1, VARIADIC ARRAY[$2, $3::text]) END $$"
)
FORGED_BOOLEAN_FORMAT = (  # the same trick for constraints (validated) and indexes (valid, ready)
    "CREATE FUNCTION pg_catalog.format(text, text, boolean) RETURNS text LANGUAGE sql IMMUTABLE"
    " SET search_path = pg_catalog AS $$ SELECT CASE WHEN $1 = '%s validated %s' THEN $2 || ' validated true'"
    " ELSE format($1, VARIADIC ARRAY[$2, $3::text]) END $$"
)


def _verify_after_a_login(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    with running_vault(env) as vault:
        assert isinstance(_tokenize(env, vault, fresh_value(vault_pb2.TOKEN_TYPE_IP)), str)
    return run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)


def test_a_disabled_trigger_and_an_unvalidated_constraint_are_named_whatever_format_prints(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_vault(own_database) as vault:
        assert isinstance(_tokenize(own_database, vault, fresh_value(vault_pb2.TOKEN_TYPE_IP)), str)
    with as_owner(own_database) as owner:
        owner.execute(FORGED_FORMAT)
        owner.execute(FORGED_BOOLEAN_FORMAT)
        owner.execute("ALTER TABLE vault.tokens DISABLE TRIGGER tokens_erasure_counted")
        owner.execute("UPDATE pg_constraint SET convalidated = false WHERE conname = 'tokens_known_type'")
    code, printed = run_audit_verify(own_database, Path(own_database["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)
    assert code == 1, printed  # before: exit 0 "audit log intact"
    assert "trigger tokens_erasure_counted on vault.tokens differs from its migration's definition" in printed
    assert "constraint tokens_known_type on vault.tokens differs from its migration's definition" in printed


def test_grants_owners_and_column_types_of_vault_tables_are_compared(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with as_owner(own_database) as owner:
        owner.execute("GRANT UPDATE ON vault.tokens TO tokenvault_vault")  # unaudited writes for the service's role
        owner.execute("ALTER TABLE vault.erasure_count OWNER TO tokenvault_vault")
        owner.execute("ALTER TABLE vault.audit_log ALTER COLUMN client DROP NOT NULL")
        owner.execute("GRANT EXECUTE ON FUNCTION vault.count_erasure() TO tokenvault_etl")
        owner.execute("GRANT CREATE ON SCHEMA vault TO tokenvault_vault")
    code, printed = _verify_after_a_login(own_database, monkeypatch)
    assert code == 1, printed  # before: exit 0 "audit log intact"
    for changed in (
        "table vault.tokens",
        "table vault.erasure_count",
        "column client of vault.audit_log",
        "function vault.count_erasure()",
        "schema vault",
    ):
        assert f"{changed} differs from its migration's definition" in printed, changed
