"""`audit verify` says HOW a guard differs from its migrations, not only that it does (review 46, W46-9).

The manifest held one SHA-256 per guard, so a security team member read "trigger tokens_erasure_counted on
vault.tokens differs from its migration's definition" and could not tell a disabled trigger from a replaced
body or one deferred to commit. It now holds each guard's fields (flags in words, texts as their SHA-256), and a
difference names each field that moved: a flag from what to what, a text with the digest it has now. Real
OpenBao and PostgreSQL, a database of each test's own, changed as its owner would change it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2

__all__ = ["own_database"]

DIFFERS = "differs from its migration's definition"
ERASE_TOKENS = "vault.erase_tokens(text[],bytea[],integer,text,text,text,text,text)"


def _verify_after_a_login(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    with running_vault(env) as vault:
        assert isinstance(_tokenize(env, vault, fresh_value(vault_pb2.TOKEN_TYPE_IP)), str)
    return run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)


def _definition_digest_now(env: dict[str, str], function: str) -> str:
    """The SHA-256 of the function's definition as the check reads it (search path pg_catalog, pg_temp)."""
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute("SET search_path = pg_catalog, pg_temp")
        row = conn.execute("SELECT pg_get_functiondef(%s::regprocedure)", (function,)).fetchone()
    assert row is not None
    return hashlib.sha256(str(row[0]).encode()).hexdigest()


def test_a_disabled_trigger_a_deferred_one_and_an_unvalidated_constraint_say_what_changed(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with as_owner(own_database) as owner:
        owner.execute("ALTER TABLE vault.tokens DISABLE TRIGGER tokens_erasure_counted")
        owner.execute("UPDATE pg_constraint SET convalidated = false WHERE conname = 'tokens_known_type'")
        owner.execute("DROP TRIGGER tokens_erased_forget_resealed ON vault.tokens")  # back, deferred to commit
        owner.execute(
            "CREATE CONSTRAINT TRIGGER tokens_erased_forget_resealed AFTER UPDATE OF sealed ON vault.tokens"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.sealed IS NOT NULL AND NEW.sealed IS NULL)"
            " EXECUTE FUNCTION vault.forget_resealed_values()"
        )
    code, printed = _verify_after_a_login(own_database, monkeypatch)
    print(printed)
    assert code == 1, printed
    # before: each line ended at "differs from its migration's definition", saying nothing of how
    assert (
        f"trigger tokens_erasure_counted on vault.tokens {DIFFERS}: state disabled (migrations: enabled)\n" in printed
    )
    assert (
        f"constraint tokens_known_type on vault.tokens {DIFFERS}: validation not validated (migrations: validated);"
        " definition differs (now sha256 "  # pg_get_constraintdef prints NOT VALID
    ) in printed
    assert (
        f"trigger tokens_erased_forget_resealed on vault.tokens {DIFFERS}: deferral deferrable, initially deferred"
        " (migrations: not deferrable); definition differs (now sha256 "
    ) in printed
    assert "constraint tokens_erased_forget_resealed on vault.tokens is in no migration" in printed


def test_a_replaced_function_body_an_owner_and_a_grant_say_what_changed(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(own_database["PG_ADMIN_DSN"], autocommit=True) as owner:
        (definition,) = owner.execute("SELECT pg_get_functiondef(%s::regprocedure)", (ERASE_TOKENS,)).fetchone() or (
            "",
        )
        owner.execute(definition.replace("BEGIN", "BEGIN\n    PERFORM 1;  -- the owner's line", 1))
        owner.execute("ALTER TABLE vault.erasure_count OWNER TO tokenvault_vault")
        owner.execute("GRANT UPDATE ON vault.tokens TO tokenvault_vault")
    body_now = _definition_digest_now(own_database, ERASE_TOKENS)
    code, printed = _verify_after_a_login(own_database, monkeypatch)
    print(printed)
    assert code == 1, printed
    assert f"function {ERASE_TOKENS} {DIFFERS}: definition differs (now sha256 {body_now})\n" in printed
    assert f"table vault.erasure_count {DIFFERS}: owner tokenvault_vault (migrations: tokenvault_owner)" in printed
    assert (
        f"table vault.tokens {DIFFERS}: grants tokenvault_vault=rw/tokenvault_owner"
        " (migrations: tokenvault_vault=r/tokenvault_owner)\n"
    ) in printed
