"""`audit verify` compares what guards the vault's tables with what the migrations define (attack 43, A43-4/A43-5).

Real OpenBao and PostgreSQL, the database owner acting as a superuser. Before, verify read only the audit chain
and the erased rows, so an owner who dropped `tokens_token_unique` (A43-4's shadow row), added a trigger deferred
to commit that copies each erased row back (A43-5) or replaced `vault.erase_tokens` (A41-3's vector) had verify
say "audit log intact", exit 0. Now each is named ("the vault schema differs from its migrations: ...") and verify
exits 1, through the service account's `audit-verify` and through the vault's AuditReports (`tokenvault audit
verify`) alike; an untouched database - after every migration, erasures and a key rotation - stays intact.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import vault_clients
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    erase,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from tokenvault_common.pg_options import startup_options
from vault_service.adapters.postgres.key_job_liveness import PostgresJobLiveness
from vault_service.adapters.postgres.session_settings import session_settings_with

__all__ = ["anchored", "own_database"]

DIFFERS = "the vault schema differs from its migrations"


def _verify_both_ways(env: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """The service account's audit-verify (exit code, printed) after the security team's, which must agree."""
    vault, exported = anchored
    vault.wait_for_checkpoint()
    with vault_clients(env, vault.address) as make:
        verdict = make("security-team").audit_verify()
    code, printed = run_audit_verify(env, exported, monkeypatch)
    assert verdict.intact == (code == 0), (verdict.lines, printed)
    assert (DIFFERS in printed) == any(DIFFERS in line for line in verdict.lines), (verdict.lines, printed)
    if not verdict.intact:
        assert DIFFERS in verdict.finding or DIFFERS not in printed, verdict.finding
    return code, printed


def test_an_untouched_database_verifies_intact_after_erasures_and_a_key_rotation(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, _ = anchored
    token = tokenize_fresh_ip(own_database, vault)
    assert erase(own_database, vault, [token], "GDPR-2026-4700") == [None]
    liveness = PostgresJobLiveness(own_database["PG_VAULT_DSN"], startup_options(session_settings_with("on")))
    try:
        vault.wired.rotation("admin:schema-check", None, liveness).rotate_encryption_key("CHG-SCHEMA-1")
    finally:
        liveness.release()
    tokenize_fresh_ip(own_database, vault)
    code, printed = _verify_both_ways(own_database, anchored, monkeypatch)
    assert code == 0 and "audit log intact" in printed and DIFFERS not in printed, printed


def test_a_dropped_token_uniqueness_is_named(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, _ = anchored
    token = tokenize_fresh_ip(own_database, vault)
    assert erase(own_database, vault, [token], "GDPR-2026-4701") == [None]
    with as_owner(own_database) as owner:  # A43-4: room for a live copy beside the erased row
        owner.execute("ALTER TABLE vault.tokens DROP CONSTRAINT tokens_token_unique CASCADE")
    code, printed = _verify_both_ways(own_database, anchored, monkeypatch)
    print(printed)
    assert code == 1, printed
    assert f"{DIFFERS}: constraint tokens_token_unique on vault.tokens is missing" in printed, printed
    assert "audit log NOT verified" in printed


def test_a_trigger_deferred_to_commit_is_named(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    with as_owner(own_database) as owner:  # A43-5's set-up, its copy reduced to nothing: the trigger is the finding
        owner.execute(
            "CREATE FUNCTION public.keep_erased() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            " AS $$ BEGIN RETURN NULL; END $$"
        )
        owner.execute(
            "CREATE CONSTRAINT TRIGGER keep_erased AFTER UPDATE ON vault.tokens DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW WHEN (OLD.sealed IS NOT NULL AND NEW.sealed IS NULL AND NEW.erased_at IS NOT NULL)"
            " EXECUTE FUNCTION public.keep_erased()"
        )
        owner.execute("ALTER TABLE vault.tokens ENABLE ALWAYS TRIGGER keep_erased")
    code, printed = _verify_both_ways(own_database, anchored, monkeypatch)
    print(printed)
    assert code == 1, printed
    assert f"{DIFFERS}: trigger keep_erased on vault.tokens is in no migration" in printed, printed
    assert f"{DIFFERS}: function public.keep_erased() is in no migration" in printed, printed


def test_a_replaced_erase_function_is_named(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(own_database["PG_ADMIN_DSN"], autocommit=True) as owner:
        (definition,) = owner.execute(
            "SELECT pg_get_functiondef('vault.erase_tokens(text[],bytea[],integer,text,text,text,text,text)'"
            "::regprocedure)"
        ).fetchone() or ("",)
        assert "BEGIN" in definition
        owner.execute(definition.replace("BEGIN", "BEGIN\n    PERFORM 1;  -- the owner's line", 1))
    code, printed = _verify_both_ways(own_database, anchored, monkeypatch)
    print(printed)
    assert code == 1, printed
    assert (
        f"{DIFFERS}: function vault.erase_tokens(text[],bytea[],integer,text,text,text,text,text) differs from its"
        " migration's definition" in printed
    ), printed
