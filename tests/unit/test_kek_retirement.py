"""`retire-kek-versions`: which data keys hold old KEK versions back, and the one Transit write it makes."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any, cast

import pytest
from rich.console import Console

from tokenvault_common.key_status_text import print_key_status
from vault_service.domain.errors import KekVersionsInUse, KeysUnavailable
from vault_service.service import rotation
from vault_service.service.ports import KekVersions
from vault_service.service.rotation import KeyRotation
from vault_service.service.rotation_status import KeyStatus, RotationStatus, why_not_retire

KEYS = [
    KeyStatus(1, "encryption", "retired", 1),  # retired on purpose: its version going away shreds it
    KeyStatus(2, "fingerprint", "retired", 1),
    KeyStatus(3, "audit", "active", 3),
    KeyStatus(4, "encryption", "decrypt_only", 3),
    KeyStatus(5, "encryption", "active", 3),
    KeyStatus(6, "fingerprint", "pending", 3),
]


def test_retired_keys_do_not_hold_old_versions_back_and_live_or_audit_keys_do() -> None:
    assert why_not_retire(3, KEYS, KekVersions(3, 1, 0), "tokenvault") is None
    for held in (KeyStatus(7, "audit", "retired", 2), KeyStatus(7, "encryption", "decrypt_only", 2)):
        refusal = why_not_retire(3, [*KEYS, held], KekVersions(3, 1, 0), "tokenvault")
        assert refusal is not None and f"key 7 ({held.purpose}, {held.state}, v2)" in refusal and "rewrap" in refusal
        assert "key 1 " not in refusal


def test_a_version_past_the_latest_or_below_the_present_minimum_is_refused() -> None:
    assert "has no version 4: its latest is v3" in str(why_not_retire(4, KEYS, KekVersions(3, 1, 0), "k"))
    assert "would bring retired versions back" in str(why_not_retire(2, KEYS, KekVersions(3, 3, 3), "k"))
    assert why_not_retire(3, KEYS, KekVersions(3, 3, 3), "k") is None  # again: nothing lowered


class _Kek:
    name = "tokenvault"

    def __init__(self, versions: KekVersions) -> None:
        self._versions = versions
        self.writes: list[tuple[int, int]] = []

    def versions(self) -> KekVersions:
        return self._versions

    def set_minimums(self, min_decryption: int, min_encryption: int) -> None:
        self.writes.append((min_decryption, min_encryption))


class _Audit:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def append(self, event: Any) -> None:
        self.outcomes.append(event.outcome)


def _job(audit: _Audit, monkeypatch: pytest.MonkeyPatch, keys: list[KeyStatus]) -> KeyRotation:
    nothing = cast(Any, None)
    key_store = SimpleNamespace(load_keys=lambda: keys)  # KeyStatus has a stored key's fields
    job = KeyRotation(nothing, cast(Any, key_store), nothing, nothing, cast(Any, audit), "vault:alice")
    # The check of retired keys' kept copies needs the database and Vault: test_kept_copies_checked.py
    monkeypatch.setattr(rotation, "retired_keys_refusal", lambda *args: None)
    return job


def test_one_write_of_both_minimums_and_min_encryption_never_goes_down(monkeypatch: pytest.MonkeyPatch) -> None:
    audit, kek = _Audit(), _Kek(KekVersions(3, 2, 3))
    assert _job(audit, monkeypatch, KEYS).retire_kek_versions(3, "CHG-1", kek) == 3
    assert kek.writes == [(3, 3)]
    kek = _Kek(KekVersions(3, 1, 3))
    _job(audit, monkeypatch, KEYS).retire_kek_versions(2, "CHG-1", kek)
    assert kek.writes == [(2, 3)]
    assert audit.outcomes[0] == "started" and audit.outcomes[1].startswith("ok: KEK tokenvault versions below v3")


def test_a_refusal_writes_nothing_to_transit_and_is_on_record(monkeypatch: pytest.MonkeyPatch) -> None:
    audit, kek = _Audit(), _Kek(KekVersions(3, 1, 0))
    job = _job(audit, monkeypatch, [*KEYS, KeyStatus(8, "audit", "active", 2)])
    with pytest.raises(KekVersionsInUse, match=r"key 8 \(audit, active, v2\).*nothing was changed in Transit"):
        job.retire_kek_versions(3, "CHG-1", kek)
    assert kek.writes == [] and audit.outcomes[0] == "started" and audit.outcomes[1].startswith("refused: ")


def test_a_kek_that_cannot_be_read_leaves_a_failed_outcome_not_an_open_intent(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Unreadable(_Kek):
        def versions(self) -> KekVersions:
            raise KeysUnavailable("Vault at https://vault:8200 is unreachable")

    audit, kek = _Audit(), _Unreadable(KekVersions(3, 1, 0))
    with pytest.raises(KeysUnavailable):
        _job(audit, monkeypatch, KEYS).retire_kek_versions(3, "CHG-1", kek)
    assert kek.writes == [] and audit.outcomes == ["started", "failed: Vault at https://vault:8200 is unreachable"]


def test_status_shows_the_present_minimum_and_the_keys_past_it() -> None:
    """What `retire-kek-versions` did is on `tokenvault status`: Transit's minimum, and which keys no longer unwrap."""
    printed = io.StringIO()
    print_key_status(RotationStatus(3, KEYS, 0, 0, 3, 3), Console(file=printed, width=200))
    lines = printed.getvalue().splitlines()
    assert "KEK min_decryption_version    : v3 (versions below it retired in Transit)" in lines
    past = [line.split()[1] for line in lines if "(below the minimum)" in line]
    assert past == ["1", "2"]  # the two retired keys wrapped under v1; no live key
