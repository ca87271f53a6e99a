"""Whatever stops `reencrypt` or `reindex`, its intent row gets an outcome; rows that do not open are set aside (F2).

SealBroken, a plain Exception, escaped `except VaultError` and left the intent row `started`. An
error that is not a VaultError is recorded by its class only: its text could quote a row.
"""

from __future__ import annotations

import os
from typing import Any, cast

import pytest

from vault_service.domain.audit import AuditEvent
from vault_service.domain.crypto import KEY_BYTES, DataKey, seal
from vault_service.domain.errors import KeysUnavailable, StoredValueAltered
from vault_service.domain.keys import KeyPurpose, KeyState
from vault_service.domain.token_types import TokenType
from vault_service.service import rotation as rotation_module
from vault_service.service.ports import StoredKey, StoredToken
from vault_service.service.rotation import KeyRotation


class _Audit:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def append(self, event: AuditEvent) -> int:
        self.outcomes.append(event.outcome)
        return len(self.outcomes)


class _Ring:
    active_encryption_key = cast(Any, type("Key", (), {"key_id": 2})())
    pending_fingerprint_key = cast(Any, type("Key", (), {"key_id": 3})())


class _Keys:
    def refresh(self) -> _Ring:
        return _Ring()


class _Broken:
    """A token store whose batches fail with an error no adapter translated, quoting a token."""

    def reseal_batch(self, *args: object) -> int:
        raise RuntimeError("ip_secret0000000000000000 went wrong")

    reindex_batch = reseal_batch


@pytest.mark.parametrize("job", ["reencrypt", "reindex"])
def test_an_unexpected_error_is_recorded_by_its_class(job: str) -> None:
    audit = _Audit()
    rotation = KeyRotation(
        cast(Any, _Keys()), cast(Any, None), cast(Any, None), cast(Any, _Broken()), cast(Any, audit), "a"
    )
    with pytest.raises(RuntimeError):
        getattr(rotation, job)("CHG-1", 10)
    assert audit.outcomes[0] == "started"
    assert audit.outcomes[1].startswith("failed: RuntimeError (not a refusal the job knows")
    assert "ip_secret" not in audit.outcomes[1] and "run the job again" in audit.outcomes[1]


class _OneKey:
    def __init__(self, key: DataKey) -> None:
        self._key = key

    def key(self, key_id: int) -> DataKey:
        return self._key


def test_reencrypt_sets_aside_rows_that_do_not_open_and_stops_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = DataKey(1, os.urandom(KEY_BYTES)), DataKey(2, os.urandom(KEY_BYTES))
    good = StoredToken("ip_good", "ip", 1, seal(old, TokenType.IP, "ip_good", "192.0.2.1"))
    planted = [StoredToken(f"ip_planted{n}", "ip", 1, os.urandom(40)) for n in range(3)]
    rotation = KeyRotation(cast(Any, _OneKey(old)), cast(Any, None), cast(Any, None), cast(Any, None), _Audit(), "a")
    set_aside: dict[str, int] = {}
    resealed = rotation._reseal(new, set_aside, [planted[0], good, planted[1]])
    assert [token for token, _, _ in resealed] == ["ip_good"] and set_aside == {"ip_planted0": 1, "ip_planted1": 1}
    monkeypatch.setattr(rotation_module, "SET_ASIDE_LIMIT", 2)
    with pytest.raises(StoredValueAltered, match="more than 2 stored values do not open") as stopped:
        rotation._reseal(new, set_aside, [planted[2]])
    assert "ip_planted" not in str(stopped.value)


class _CountingAudit:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int]] = []

    def append(self, event: AuditEvent) -> int:
        self.rows.append((event.outcome, event.item_count))
        return len(self.rows)


class _Batches:
    """Rows under key 1 handed out in order as the adapter does: a resealed row leaves, a skipped one stays out."""

    def __init__(self, rows: list[StoredToken]) -> None:
        self.rows = rows
        self.moved: list[str] = []

    def reseal_batch(self, active: int, limit: int, reseal: Any, actor: str, skip: tuple[str, ...]) -> int:
        left = [r for r in self.rows if r.token not in self.moved and r.token not in skip][:limit]
        if left:
            self.moved += [token for token, _, _ in reseal(left)]
        return len(left)


class _RingOfOld:
    """Key 1 (`old`) to open the rows, a real active key 2 to seal them."""

    def __init__(self, old: DataKey) -> None:
        self._old = old
        self.active_encryption_key = DataKey(2, os.urandom(KEY_BYTES))

    def refresh(self) -> _RingOfOld:
        return self

    def key(self, key_id: int) -> DataKey:
        return self._old


def test_a_stop_past_the_limit_counts_only_the_values_moved_and_lists_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 good rows then 1,001 planted recorded 1200 moved (review 29, F3): the rows set aside are read, not moved."""
    monkeypatch.setattr(rotation_module, "SET_ASIDE_LIMIT", 10)
    old = DataKey(1, os.urandom(KEY_BYTES))
    good = [StoredToken(f"ip_good{n}", "ip", 1, seal(old, TokenType.IP, f"ip_good{n}", "192.0.2.1")) for n in range(20)]
    planted = [StoredToken(f"ip_planted{n}", "ip", 1, os.urandom(40)) for n in range(11)]
    store, audit = _Batches(good + planted), _CountingAudit()
    rotation = KeyRotation(cast(Any, _RingOfOld(old)), cast(Any, None), cast(Any, None), cast(Any, store), audit, "a")
    with pytest.raises(StoredValueAltered) as stopped:
        rotation.reencrypt("CHG-1", 3)
    outcome, count = audit.rows[-1]
    assert len(store.moved) == 20 and count == 20
    assert outcome.startswith("failed: more than 10 stored values do not open under their data key")
    assert "10 under data key 1" in outcome
    assert "SELECT id, token_type FROM vault.tokens WHERE dek_id IN (1) AND sealed IS NOT NULL" in outcome
    assert "ip_planted" not in outcome and "ip_good" not in outcome and str(stopped.value) in outcome


def test_a_stop_after_rows_were_set_aside_counts_only_the_values_moved() -> None:
    """Any failure after a row was set aside (here the job's stop before a batch) records the values moved."""
    old = DataKey(1, os.urandom(KEY_BYTES))
    good = [StoredToken(f"ip_good{n}", "ip", 1, seal(old, TokenType.IP, f"ip_good{n}", "192.0.2.1")) for n in range(4)]
    planted = [StoredToken(f"ip_planted{n}", "ip", 1, os.urandom(40)) for n in range(2)]
    store, audit = _Batches([planted[0], good[0], planted[1], *good[1:]]), _CountingAudit()
    batches = iter(range(3))

    def stop_at_the_third_batch(phase: str) -> None:
        if next(batches) == 2:
            raise StoredValueAltered("stopped")

    rotation = KeyRotation(cast(Any, _RingOfOld(old)), cast(Any, None), cast(Any, None), cast(Any, store), audit, "a")
    with pytest.raises(StoredValueAltered):
        rotation.reencrypt("CHG-1", 2, before_batch=stop_at_the_third_batch)
    assert store.moved == ["ip_good0", "ip_good1"] and audit.rows[-1] == ("failed: stopped (intent row 1)", 2)


class _KeysLoaded:
    """Key 1 loaded; every other id is not (KeysUnavailable), as a retired or not yet rewrapped key is."""

    def __init__(self, key: DataKey) -> None:
        self._key = key

    def key(self, key_id: int) -> DataKey:
        if key_id != self._key.key_id:
            raise KeysUnavailable(f"data key {key_id} is not loaded (retired or not yet rewrapped)")
        return self._key


class _KeyRows:
    """vault.data_keys: key 1 active, key 5 retired, key 6 decrypt_only (not loaded: Vault would not unwrap it)."""

    def __init__(self) -> None:
        self.reads = 0

    def load_keys(self) -> list[StoredKey]:
        self.reads += 1
        states = {1: KeyState.ACTIVE, 5: KeyState.RETIRED, 6: KeyState.DECRYPT_ONLY}
        return [StoredKey(i, KeyPurpose.ENCRYPTION, "vault:v1:x", state) for i, state in states.items()]


def test_reencrypt_sets_aside_a_row_under_a_retired_key_but_fails_on_a_live_key_not_loaded() -> None:
    key, new = DataKey(1, os.urandom(KEY_BYTES)), DataKey(2, os.urandom(KEY_BYTES))
    rows = _KeyRows()
    rotation = KeyRotation(
        cast(Any, _KeysLoaded(key)), cast(Any, rows), cast(Any, None), cast(Any, None), _Audit(), "a"
    )
    good = StoredToken("ip_good", "ip", 1, seal(key, TokenType.IP, "ip_good", "192.0.2.1"))
    under_retired = [StoredToken(f"ip_retired{n}", "ip", 5, os.urandom(40)) for n in range(2)]
    set_aside: dict[str, int] = {}
    resealed = rotation._reseal(new, set_aside, [under_retired[0], good, under_retired[1]])
    assert [token for token, _, _ in resealed] == ["ip_good"]
    assert set_aside == {"ip_retired0": 5, "ip_retired1": 5} and rows.reads == 1  # the key rows read once
    with pytest.raises(KeysUnavailable, match="data key 6 is not loaded"):  # a live key: the job fails, is rerun
        rotation._reseal(new, set_aside, [StoredToken("ip_live", "ip", 6, os.urandom(40))])


class _TransitDown:
    def rewrap_outdated(self) -> int:
        raise KeysUnavailable("Vault at https://vault:8200 is unreachable")


def test_a_failed_rewrap_writes_its_outcome() -> None:
    """Review 32, F8: a Transit error left the rewrap's intent row with no outcome (later closed as `interrupted`)."""
    audit = _Audit()
    rotation = KeyRotation(
        cast(Any, _TransitDown()), cast(Any, None), cast(Any, None), cast(Any, None), cast(Any, audit), "a"
    )
    with pytest.raises(KeysUnavailable):
        rotation.rewrap("CHG-1")
    assert audit.outcomes == ["started", "failed: Vault at https://vault:8200 is unreachable (intent row 1)"]
