"""`audit verify` tells a reveal whose fetch preceded an erasure from one after it exactly (attack 43, A43-1).

It forgave any reveal written within REVEAL_IN_FLIGHT (3 s) of an erase record of the same token: the database owner
undoing the erasure at once and a colluding investigator revealing on a replica that had not read the erase row yet
passed verify and who-saw. Detokenize's fetch now reads, in the same statement (one snapshot), the audit log's newest
id, and its audit row says it ("; fetch saw records up to N"): the erase record commits with the erasure, so the
fetch saw the erasure exactly when N is at or past the erase record's id, whenever the reveal's row is written. A
fetch that preceded the erasure is forgiven however late its row lands (it was a false alarm past 3 s). Records
without it (written before) keep the 3 s rule. Real OpenBao and PostgreSQL, two replicas on a database of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningVault, running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database, run_audit_verify, tokenize_fresh_ip
from tests.integration.test_who_saw_verified import _reveal, _rows_with, _who_saw
from vault_service.service.audit_verify import REVEAL_IN_FLIGHT

__all__ = ["own_database"]


@pytest.fixture
def replicas(own_database: dict[str, str], tmp_path: Path) -> Iterator[tuple[RunningVault, RunningVault, Path]]:
    """Two replicas checkpointing every second into one exported file; no key-check round of their own meanwhile."""
    exported = tmp_path / "checkpoints.jsonl"
    settings = {
        "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported),
        "TOKENVAULT_KEY_CHECK_SECONDS": "3600",
    }
    with running_vault(own_database, **settings) as first, running_vault(own_database, **settings) as second:
        yield first, second, exported


def test_a_reveal_right_after_an_owner_undo_is_named_by_verify_and_who_saw(
    own_database: dict[str, str], replicas: tuple[RunningVault, RunningVault, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    revealer, eraser, exported = replicas
    token = tokenize_fresh_ip(own_database, revealer)
    with as_owner(own_database) as owner:  # what a base backup holds
        (sealed,) = owner.execute("SELECT sealed FROM vault.tokens WHERE token = %s", (token,)).fetchone() or (None,)
    assert erase(own_database, eraser, [token], "GDPR-2026-4431") == [None]
    with as_owner(own_database) as owner:  # at once: well inside REVEAL_IN_FLIGHT
        (erased_at,) = owner.execute("SELECT erased_at FROM vault.tokens WHERE token = %s", (token,)).fetchone() or (
            None,
        )
        owner.execute("UPDATE vault.tokens SET sealed = %s, erased_at = NULL WHERE token = %s", (sealed, token))
        # Served by the replica that has not read the erase row yet (its next key-check round would refuse it).
        _reveal(own_database, revealer, "fraud-investigator", token, "CASE-2026-4432")
        owner.execute("UPDATE vault.tokens SET sealed = NULL, erased_at = %s WHERE token = %s", (erased_at, token))
    revealer.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1 and "after an erasure" in printed, printed  # before: exit 0, "audit log intact"
    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    (revealed,) = _rows_with(printed, "detokenize", "CASE-2026-4432")
    assert "REVEALED AFTER AN ERASURE" in revealed, printed  # before: not marked


def test_a_reveal_fetched_before_the_erasure_and_audited_late_is_no_finding(
    own_database: dict[str, str], replicas: tuple[RunningVault, RunningVault, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    revealer, eraser, exported = replicas
    token = tokenize_fresh_ip(own_database, revealer)
    store = revealer.wired.vault._tokens
    fetch = store.fetch_seeing

    def fetched_then_stalled(tokens: list[str]) -> object:  # a reveal whose process stalls after its fetch
        rows = fetch(tokens)
        assert erase(own_database, eraser, [token], "GDPR-2026-4433") == [None]  # committed after that fetch
        time.sleep(REVEAL_IN_FLIGHT.total_seconds() + 0.5)
        return rows

    monkeypatch.setattr(store, "fetch_seeing", fetched_then_stalled)
    _reveal(own_database, revealer, "fraud-investigator", token, "CASE-2026-4434")  # the value read before
    monkeypatch.undo()
    revealer.wait_for_checkpoint()
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed  # before: exit 1, a reveal "after an erasure"
