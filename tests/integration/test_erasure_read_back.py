"""An erasure is answered "erased" only once its rows and its audit row read back as asked (attack 41, A41-3).

The database owner replaced `vault.erase_tokens` for one erasure with a version that sets `erased_at` and
leaves the value, and writes its audit row under another case: the officer was told "erased", the value kept
revealing, who-saw named the other case. The vault now reads back, before the transaction commits, the rows
the function says it erased (no value, no fingerprint, the erasure mark) and the erase row (its hash must be
that of the event asked for; its id and hashes are then anchored as appends are). Either wrong is DATA_LOSS
and the erasure with its audit row is rolled back, the refusal audited. Real Postgres and OpenBao, the vault
in-process on a database of the test's own (the function is replaced there only).
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


_LEAVES_THE_VALUE = (
    ("SET sealed = NULL, fingerprint = NULL, next_fingerprint = NULL, erased_at = now()", "SET erased_at = now()"),
)
_NAMES_ANOTHER_CASE = (  # A41-3's other two edits: the row's purpose, and the function's own check of it
    ("'erase', p_purpose,", "'erase', 'GDPR-2026-9999',"),
    ("a.purpose IS NOT DISTINCT FROM p_purpose", "a.purpose = 'GDPR-2026-9999'"),
)


@pytest.mark.parametrize(
    ("edits", "told", "logged"),
    [
        (_LEAVES_THE_VALUE, "still stored when read back", "read-back found values"),
        (_NAMES_ANOTHER_CASE, "its audit row, read back, is not the one the vault asked for", "not the event"),
    ],
    ids=["leaves-the-value", "names-another-case"],
)
def test_an_erase_function_of_the_owners_is_refused_and_rolled_back_not_told_erased(
    own_database: dict[str, str],
    anchored: Anchored,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    edits: tuple[tuple[str, str], ...],
    told: str,
    logged: str,
) -> None:
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    with as_owner(own_database) as owner:
        originals = [str(definition) for (definition,) in owner.execute(_FUNCTIONS).fetchall()]
        replaced = 0
        for definition in originals:
            changed = definition
            for old, new in edits:
                changed = changed.replace(old, new)
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
    assert "erasure was not done" in str(refused.value) and told in str(refused.value), refused.value
    assert "security team" in str(refused.value) and logged in caplog.text
    with as_owner(own_database) as owner:  # rolled back: no mark, no erase row; the refusal is audited
        (marked,) = owner.execute("SELECT count(*) FROM vault.tokens WHERE erased_at IS NOT NULL").fetchone() or (0,)
        actions = [a for (a,) in owner.execute("SELECT action FROM vault.audit_log WHERE action = 'erase'")]
    assert marked == 0 and actions == ["erase"]  # the refusal's row (outcome refused), not an erasure's
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-4132")  # not erased, and not told so

    assert erase(own_database, vault, [token], "GDPR-2026-4133") == [None]  # the function restored: erased
    vault.wait_for_checkpoint()
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0 and "erasures reconciled: 1 erased token(s)" in printed, printed
