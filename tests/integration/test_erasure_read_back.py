"""An erasure is answered "erased" only once its rows read back erased in its own transaction (attack 41, A41-3).

The database owner replaced `vault.erase_tokens` for one erasure with a version that sets `erased_at` and
leaves the value: the officer was told "erased", the value kept revealing. The vault now reads the rows the
function says it erased back before the transaction commits (no value, no fingerprint, the erasure mark);
any left is DATA_LOSS and the erasure with its audit row is rolled back, the refusal audited. Real Postgres
and OpenBao, the vault in-process on a database of the test's own (the function is replaced there only).
"""

from __future__ import annotations

import logging

import grpc
import pytest

from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    erase,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from tests.integration.test_who_saw_verified import _reveal
from tokenvault_client import VaultClientError

__all__ = ["anchored", "own_database"]  # fixtures used here

_FUNCTIONS = (
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = 'vault' AND p.proname = 'erase_tokens'"
)


def test_an_erase_function_that_leaves_the_value_is_refused_and_rolled_back_not_told_erased(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    with as_owner(own_database) as owner:
        originals = [str(definition) for (definition,) in owner.execute(_FUNCTIONS).fetchall()]
        replaced = 0
        for definition in originals:  # A41-3's edit: the mark set, the value and fingerprint left
            changed = definition.replace(
                "SET sealed = NULL, fingerprint = NULL, next_fingerprint = NULL, erased_at = now()",
                "SET erased_at = now()",
            )
            if changed != definition:
                owner.execute(changed.encode())
                replaced += 1
        assert replaced >= 1
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(VaultClientError) as refused:
            erase(own_database, vault, [token], "GDPR-2026-4131")
    finally:
        with as_owner(own_database) as owner:
            for definition in originals:
                owner.execute(definition.encode())
    assert refused.value.code == grpc.StatusCode.DATA_LOSS, refused.value
    assert "erasure was not done" in str(refused.value) and "security team" in str(refused.value)
    assert "read-back found values" in caplog.text
    with as_owner(own_database) as owner:  # rolled back: no mark, no erase row; the refusal is audited
        (marked,) = owner.execute("SELECT count(*) FROM vault.tokens WHERE erased_at IS NOT NULL").fetchone() or (0,)
        actions = [a for (a,) in owner.execute("SELECT action FROM vault.audit_log WHERE action = 'erase'")]
    assert marked == 0 and actions == ["erase"]  # the refusal's row (outcome refused), not an erasure's
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-4132")  # not erased, and not told so

    assert erase(own_database, vault, [token], "GDPR-2026-4133") == [None]  # the function restored: erased
    vault.wait_for_checkpoint()
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0 and "erasures reconciled: 1 erased token(s)" in printed, printed
