"""Erasures made before migration 0023 (erase rows naming no token) reconcile; a lie hidden among them does not.

`audit verify` sets every erased token against the verified erase rows (insider round 9, Break 2).
Rows written by `vault.erase_tokens` before migration 0023 name no token: the tokens they erased
are counted as "erased before erase records named tokens", backed by those rows' erased counts
and times. Here a database of the test's own is migrated to 0022, the real service erases a
token there (through the older function), 0023 is applied, and the serving role then tries to
hide an erasure behind the old ones: naming the old erased token instead, with or without an
old-style erase row of its own written just before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault
from tests.integration.audit_attacks import SERVING_ROLE_ERASE, erase, run_audit_verify, tokenize_fresh_ip
from tests.integration.own_database import database_of_its_own, migrate_before
from tokenvault_common.migrations import migrate
from vault_service.service.revealing import reveal_hash

NAMING = "0023_erase_audit_row_names_its_tokens"
_OLD_STYLE_ERASE_ROW = (  # what the function wrote before 0023; since 0031 only the owner may INSERT it
    "INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,"
    " item_count, outcome) VALUES ('privacy-officer', '1000', %s, 'erase', 'GDPR-2026-931', 'ip', 1,"
    " 'ok: 1 erased, 0 not erased')"
)


@pytest.fixture
def before_naming(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], RunningVault]]:
    """A vault on a database of its own migrated up to 0022 only, checkpointing every second."""
    with database_of_its_own(stack_env, "naming", checkpoint_file=tmp_path / "checkpoints.jsonl") as env:
        assert migrate_before(env, NAMING)[-1].startswith("0022_")
        with running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault:
            yield env, vault


def _audit_verify(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """audit-verify with the checkpoints this vault exported."""
    return run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)


def _erased_before_and_after_0023(env: dict[str, str], vault: RunningVault) -> str:
    """One token erased before 0023 is applied, one after; the token erased before."""
    old, new = tokenize_fresh_ip(env, vault), tokenize_fresh_ip(env, vault)
    assert erase(env, vault, [old], "GDPR-2026-0920") == [None]  # the older function: its row names no token
    migrate(env["PG_ADMIN_DSN"])
    assert erase(env, vault, [new], "GDPR-2026-0921") == [None]
    vault.wait_for_checkpoint()
    return old


def test_erasures_before_erase_rows_named_tokens_are_counted_not_failed(
    before_naming: tuple[dict[str, str], RunningVault], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, vault = before_naming
    _erased_before_and_after_0023(env, vault)

    code, printed = _audit_verify(env, monkeypatch)
    assert code == 0, printed
    assert (
        "erasures reconciled: 1 erased token(s), each named by one erase record;"
        " 1 erased before erase records named tokens (migration 0023)"
    ) in printed, printed


@pytest.mark.parametrize("old_style_row", [False, True], ids=["naming-the-old-token", "with-an-old-style-row"])
def test_an_erasure_hidden_behind_the_erasures_before_0023_fails_verify(
    before_naming: tuple[dict[str, str], RunningVault], monkeypatch: pytest.MonkeyPatch, old_style_row: bool
) -> None:
    env, vault = before_naming
    old = tokenize_fresh_ip(env, vault)
    assert erase(env, vault, [old], "GDPR-2026-0920") == [None]
    migrate(env["PG_ADMIN_DSN"])
    hidden = tokenize_fresh_ip(env, vault)
    (audit_key,) = vault.wired.keys.ring.audit_keys
    if old_style_row:  # the serving role may no longer write one (migration 0031) ...
        with (
            psycopg.connect(env["PG_VAULT_DSN"]) as serving_role,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="only the database itself writes it"),
        ):
            serving_role.execute(_OLD_STYLE_ERASE_ROW, ("ab" * 32,))
    with psycopg.connect(env["PG_VAULT_DSN"]) as serving_role:
        done = serving_role.execute(
            SERVING_ROLE_ERASE, ([hidden], [reveal_hash(audit_key, old)], "ab" * 32, "GDPR-2026-932")
        )
        assert done.fetchall() == [(hidden,)]
    if old_style_row:  # ... the owner still may: newer than the hidden erasure, it is still found
        with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
            owner.execute(_OLD_STYLE_ERASE_ROW, ("ab" * 32,))
    vault.wait_for_checkpoint()

    code, printed = _audit_verify(env, monkeypatch)
    assert code == 1, printed
    assert "audit log NOT verified" in printed, printed
    assert old not in printed and hidden not in printed, printed
