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
from vault_service.domain.errors import StoredValueAltered
from vault_service.domain.token_types import TokenType
from vault_service.service import rotation as rotation_module
from vault_service.service.ports import StoredToken
from vault_service.service.rotation import KeyRotation


class _Audit:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def append(self, event: AuditEvent) -> None:
        self.outcomes.append(event.outcome)


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
