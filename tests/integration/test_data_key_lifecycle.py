"""The serving role moves data keys only along their lifecycle (insider round 9, Breaks 1 and 9).

Break 1: the serving role (`tokenvault_vault`, whose password the vault process holds) retired
the audit data key; the next bootstrap made a new one and `audit who-saw` answered "0 reveal(s)"
under "intact" for every earlier token. Its variant replaced the audit key's wrapped key by a fresh
data key the KEK wraps, with the same outcome. Break 9: it retired the active fingerprint key;
after the next start every value already in the vault got a second token.

Against real Postgres (migration 0024's triggers) and OpenBao, on a database of the test's own;
`who-saw` runs as the security team runs it (`admin_cli.main`, its own wiring).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rich.console import Console

from devstack.stack import vault_service_env
from tests.conftest import RunningVault, stack_identity, vault_config
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    own_database,
    tokenize_fresh_ip,
)
from tests.integration.openbao_clients import security_client
from tokenvault_client import Revealed, VaultClient
from vault_service.bootstrap import bootstrap
from vault_service.domain.errors import KeysUnavailable
from vault_service.entrypoints import admin_cli, audit_report_cli

__all__ = ["anchored", "own_database"]  # fixtures used here

_RETIRE_ACTIVE = (
    "UPDATE vault.data_keys SET state = 'retired', retired_at = now() WHERE purpose = %s AND state = 'active'"
)


def _as_serving_role(env: dict[str, str], statement: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
    """Run `statement` as the vault's database role; the rows it changed."""
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as conn:
        return conn.execute(statement, params).rowcount


def _reveal(env: dict[str, str], vault: RunningVault, token: str, purpose: str) -> None:
    with VaultClient.connect(vault.address, stack_identity(env, "fraud-investigator"), deadline=10) as client:
        (outcome,) = client.detokenize([token], purpose)
    assert isinstance(outcome, Revealed), outcome


def _admin(env: dict[str, str], exported: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    """`tokenvault who-saw|audit-verify ...` as the security team runs it: exit code, stdout, stderr."""
    printed, errors = io.StringIO(), io.StringIO()
    monkeypatch.setattr(audit_report_cli, "console", Console(file=printed, width=400))
    monkeypatch.setattr(admin_cli, "configure_logging", lambda *args: None)  # pytest's logging stays
    monkeypatch.setattr("sys.stderr", errors)
    settings = {
        **vault_service_env(env),
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported),
        "TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:0",
        "TOKENVAULT_METRICS_PORT": "0",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    code = admin_cli.main([*argv, "--exported", str(exported)])
    return code, printed.getvalue(), errors.getvalue()


def _revealed_twice(env: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch) -> str:
    """A token revealed twice, both reveals checkpointed, and who-saw listing them."""
    vault, exported = anchored
    token = tokenize_fresh_ip(env, vault)
    _reveal(env, vault, token, "CASE-2026-905")
    _reveal(env, vault, token, "CASE-2026-906")
    vault.wait_for_checkpoint()
    code, printed, _ = _admin(env, exported, monkeypatch, "who-saw", token)
    assert code == 0 and "2 reveal(s) and 0 erasure(s) of this token" in printed, printed
    assert "recorded late" not in printed, printed  # a key made after 0024: its insert row holds its check
    return token


@pytest.mark.parametrize("purpose", ["audit", "fingerprint", "encryption"])
def test_the_serving_role_cannot_retire_an_active_key(
    own_database: dict[str, str], anchored: Anchored, purpose: str
) -> None:
    vault, _ = anchored
    tokenize_fresh_ip(own_database, vault)  # a value sealed and fingerprinted under the active keys
    with pytest.raises(psycopg.errors.CheckViolation):
        _as_serving_role(own_database, _RETIRE_ACTIVE, (purpose,))
    with pytest.raises(psycopg.errors.CheckViolation):
        _as_serving_role(
            own_database,
            "UPDATE vault.data_keys SET state = 'decrypt_only' WHERE purpose = %s AND state = 'active'",
            (purpose,),
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_serving_role(own_database, "DELETE FROM vault.data_keys WHERE purpose = %s", (purpose,))
    with as_owner(own_database) as owner:
        states = owner.execute("SELECT state FROM vault.data_keys WHERE purpose = %s", (purpose,)).fetchall()
    assert states == [("active",)]


def test_the_serving_role_cannot_retire_the_fingerprint_key_before_the_reindex_is_done(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, _ = anchored
    tokenize_fresh_ip(own_database, vault)
    vault.wired.rotation("admin:test").rotate_fingerprint_key("CHG-2026-901")  # pending, nothing re-indexed
    with pytest.raises(psycopg.errors.CheckViolation, match="second token"):
        _as_serving_role(own_database, _RETIRE_ACTIVE, ("fingerprint",))


def test_the_service_refuses_to_make_a_fingerprint_key_while_values_are_under_a_retired_one(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, _ = anchored
    tokenize_fresh_ip(own_database, vault)
    with as_owner(own_database) as owner:  # the owner may; so could the serving role before 0024
        owner.execute(_RETIRE_ACTIVE, ("fingerprint",))
    with pytest.raises(KeysUnavailable, match="second token"):
        bootstrap(vault_config(own_database)).close()  # the next start, e.g. `tokenvault status`
    with as_owner(own_database) as owner:
        states = owner.execute("SELECT state FROM vault.data_keys WHERE purpose = 'fingerprint'").fetchall()
    assert states == [("retired",)]  # no second fingerprint key


def test_who_saw_still_lists_the_reveals_under_a_retired_audit_key(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _revealed_twice(own_database, anchored, monkeypatch)
    with as_owner(own_database) as owner:  # the owner may; so could the serving role before 0024
        owner.execute(_RETIRE_ACTIVE, ("audit",))
    code, printed, errors = _admin(own_database, anchored[1], monkeypatch, "who-saw", token)
    assert code == 0 and "2 reveal(s) and 0 erasure(s) of this token" in printed, printed + errors


def test_who_saw_refuses_after_the_serving_role_swaps_the_audit_key(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _revealed_twice(own_database, anchored, monkeypatch)
    vault, exported = anchored
    # After a routine KEK rotation, the vault's two identities: its AppRole asks Transit for a fresh
    # data key (wrapped by the newest KEK version, as a rewrap would be), its role stores it.
    security_client(own_database).secrets.transit.rotate_key(name="tokenvault")
    _, fresh = vault.wired.wrapper.new_data_key()
    assert _as_serving_role(
        own_database, "UPDATE vault.data_keys SET wrapped_key = %s WHERE purpose = 'audit'", (fresh,)
    )

    for command in (["who-saw", token], ["audit-verify"]):
        code, printed, errors = _admin(own_database, exported, monkeypatch, *command)
        assert code == 1, printed + errors
        assert "0 reveal(s)" not in printed and "audit log intact" not in printed, printed
        assert "wrapped key was replaced" in printed + errors, printed + errors


def test_who_saw_refuses_an_audit_key_the_chain_did_not_record_even_with_its_row_rewritten(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _revealed_twice(own_database, anchored, monkeypatch)
    vault, exported = anchored
    plaintext, fresh = vault.wired.wrapper.new_data_key()
    from vault_service.domain.key_check import check_value

    with as_owner(own_database) as owner:  # the row's check value rewritten too: only the chain knows
        owner.execute(
            "UPDATE vault.data_keys SET wrapped_key = %s, check_value = %s WHERE purpose = 'audit'",
            (fresh, check_value(plaintext)),
        )
    for command in (["who-saw", token], ["audit-verify"]):
        code, printed, errors = _admin(own_database, exported, monkeypatch, *command)
        assert code == 1, printed + errors
        assert "0 reveal(s)" not in printed and "audit log intact" not in printed, printed
        assert "not the key the audit log recorded" in printed, printed + errors


_LIFECYCLE_REFUSALS = {
    # statement as the serving role (`%(token)s`: a token sealed under the decrypt_only DEK), the
    # refusal, and the words of the migration guard that gives it
    "check-value-set-once": (
        "UPDATE vault.data_keys SET check_value = '\\x00' WHERE purpose = 'audit'",
        psycopg.errors.CheckViolation,
        "check value of data key .* is set once",
    ),
    "rewrap-same-kek-version": (
        "UPDATE vault.data_keys SET wrapped_key = wrapped_key || 'A' WHERE purpose = 'audit'",
        psycopg.errors.CheckViolation,
        "rewrapped only under a newer KEK version",
    ),
    "rewrap-older-kek-version": (
        "UPDATE vault.data_keys SET wrapped_key = regexp_replace(wrapped_key, '^vault:v[0-9]+:', 'vault:v0:')"
        " WHERE purpose = 'audit'",
        psycopg.errors.CheckViolation,
        "rewrapped only under a newer KEK version",
    ),
    "retire-a-dek-still-sealing-values": (
        "UPDATE vault.data_keys SET state = 'retired', retired_at = now()"
        " WHERE purpose = 'encryption' AND state = 'decrypt_only'",
        psycopg.errors.CheckViolation,
        "still seals stored values",
    ),
    "insert-a-key-neither-active-nor-pending": (
        "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state)"
        " SELECT purpose, wrapped_key, kek_name, 'decrypt_only' FROM vault.data_keys"
        " WHERE purpose = 'encryption' AND state = 'active'",
        psycopg.errors.CheckViolation,
        "starts active",
    ),
    "retired-at-without-retiring": (
        "UPDATE vault.data_keys SET retired_at = now() WHERE purpose = 'encryption' AND state = 'decrypt_only'",
        psycopg.errors.CheckViolation,
        "changes only when it is retired",
    ),
    "no-active-dek-left-at-commit": (
        "UPDATE vault.data_keys SET state = 'decrypt_only' WHERE purpose = 'encryption' AND state = 'active'",
        psycopg.errors.CheckViolation,
        "no active encryption key left",
    ),
    "erase-with-a-null-token-hash": (
        "SELECT vault.erase_tokens(ARRAY[%(token)s], ARRAY[NULL]::bytea[], 1, 'privacy-officer', '', '',"
        " 'CASE-2026-907', 'ip')",
        psycopg.errors.InvalidParameterValue,
        "one keyed token hash is needed per token",
    ),
    "erase-with-fewer-token-hashes-than-tokens": (
        "SELECT vault.erase_tokens(ARRAY[%(token)s], ARRAY[]::bytea[], 1, 'privacy-officer', '', '',"
        " 'CASE-2026-907', 'ip')",
        psycopg.errors.InvalidParameterValue,
        "one keyed token hash is needed per token",
    ),
}


@pytest.mark.parametrize("case", sorted(_LIFECYCLE_REFUSALS))
def test_the_serving_role_is_refused_each_step_outside_the_key_lifecycle(
    own_database: dict[str, str], anchored: Anchored, case: str
) -> None:
    """Each refusal of migrations 0024 (data_keys_lifecycle, keep_an_active_key) and 0023 (erase_tokens)."""
    statement, refusal, words = _LIFECYCLE_REFUSALS[case]
    vault, _ = anchored
    token = tokenize_fresh_ip(own_database, vault)  # sealed under the DEK the rotation demotes
    vault.wired.rotation("admin:test").rotate_encryption_key("CHG-2026-907")
    before = _keys_and_values(own_database)
    with pytest.raises(refusal, match=words):
        _as_serving_role(own_database, statement, {"token": token})
    assert _keys_and_values(own_database) == before


def _keys_and_values(env: dict[str, str]) -> tuple[list[tuple[Any, ...]], int]:
    """Every data key row, and how many stored values are still sealed."""
    with as_owner(env) as owner:
        keys = owner.execute("SELECT * FROM vault.data_keys ORDER BY id").fetchall()
        (sealed,) = owner.execute("SELECT count(*) FROM vault.tokens WHERE sealed IS NOT NULL").fetchone() or (0,)
    return keys, sealed
