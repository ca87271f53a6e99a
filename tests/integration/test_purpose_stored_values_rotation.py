"""The stored-value lookup mid fingerprint-key rotation finds a stored value (review 15, finding 11).

During a rotation a stored value's fingerprint may be under a key the lookup does not fingerprint
with: once the pending key is promoted and before compaction, a row's `fingerprint` is under the
retired key and only its `next_fingerprint` is under the active one (the `next_fingerprint` probe
of `_HOLDS_ANY`, adapters/postgres/tokens.py); a replica whose key ring still shows the new key
as pending, when another one promoted it and compacted the rows, finds the value only by the
pending key's fingerprint (stored_values.py). Neither path had a test: the unit tests' fake store
ignores both. Missing either, a purpose naming a stored device id would be kept in clear for the
length of a rotation.

Real OpenBao and Postgres, the rotation's own code; a database of its own (the rotation changes
the vault's keys). A synthetic device id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest

from tests.conftest import vault_config
from tests.integration.own_database import database_of_its_own
from vault_service.bootstrap import Bootstrapped
from vault_service.bootstrap import bootstrap as vault_bootstrap
from vault_service.domain.errors import StorageError
from vault_service.domain.token_types import TokenType
from vault_service.service import rotation as rotation_module
from vault_service.service.keyring import KeyManager, KeyRing
from vault_service.service.stored_values import StoredValueLookup


def device_id() -> str:
    """A made-up device id of a model and serial shape (SM-G991B-<8 letters>), unique per test."""
    n = uuid.uuid4().int
    return "SM-G991B-" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(8))


@pytest.fixture
def wired(stack_env: dict[str, str]) -> Iterator[Bootstrapped]:
    """The vault's wiring on a freshly migrated database of its own."""
    with database_of_its_own(stack_env, "rotation_lookup", migrated=True) as env:
        wiring = vault_bootstrap(vault_config(env))
        try:
            yield wiring
        finally:
            wiring.close()


class FrozenKeys:
    """A KeyManager as a replica that has not refreshed since holds it: its ring, never refreshed."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring


def stored(wired: Bootstrapped) -> str:
    """A device id tokenized (as the ETL does), and returned."""
    device = device_id()
    [token] = wired.vault.tokenize("etl-service", [(TokenType.DEVICE_ID, device)])
    assert isinstance(token, str), token
    return device


def fingerprint_columns(wired: Bootstrapped) -> set[tuple[bool, bool]]:
    """For each live row: whether its `fingerprint` is under the active key, whether it has a `next_fingerprint`."""
    active = wired.keys.refresh().fingerprint_key.key_id
    with wired.pool.connection() as conn, conn.cursor() as cursor:
        rows = cursor.execute(
            "SELECT fingerprint_key_id = %s, next_fingerprint IS NOT NULL FROM vault.tokens"
            " WHERE fingerprint IS NOT NULL",
            (active,),
        ).fetchall()
    return {(bool(r[0]), bool(r[1])) for r in rows}


def test_a_value_whose_next_fingerprint_alone_is_under_the_active_key_is_found(
    wired: Bootstrapped, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = stored(wired)
    rotation = wired.rotation("admin:test-rotation-lookup")
    rotation.rotate_fingerprint_key("CHG-R15-1")
    monkeypatch.setattr(wired.token_store, "compact_batch", lambda *_args, **_kw: 0)  # stopped before compaction
    monkeypatch.setattr(rotation_module, "COMPACTION_WAIT_SECONDS", 0.0)
    with pytest.raises(StorageError, match="run reindex again"):  # it says so, rather than "ok" (attack 24, F3)
        rotation.reindex("CHG-R15-1")
    assert wired.keys.refresh().pending_fingerprint_key is None  # the new key is active
    assert fingerprint_columns(wired) == {(False, True)}  # fingerprint under the retired key, next under the active

    lookup = StoredValueLookup(wired.token_store, wired.keys)
    assert lookup.names_a_stored_value(f"INC-{device}") is True
    assert lookup.names_a_stored_value(f"INC-{device_id()}") is False  # a device id not stored


def test_a_replica_still_seeing_the_key_pending_finds_a_value_compacted_under_it(wired: Bootstrapped) -> None:
    device = stored(wired)
    rotation = wired.rotation("admin:test-rotation-lookup")
    rotation.rotate_fingerprint_key("CHG-R15-2")
    mid_rotation = wired.keys.refresh()
    assert mid_rotation.pending_fingerprint_key is not None
    rotation.reindex("CHG-R15-2")  # another replica's admin: promoted and compacted
    assert fingerprint_columns(wired) == {(True, False)}  # fingerprint under the new key, no next

    lookup = StoredValueLookup(wired.token_store, cast(KeyManager, FrozenKeys(mid_rotation)))
    assert lookup.names_a_stored_value(f"INC-{device}") is True
    assert lookup.names_a_stored_value(f"INC-{device_id()}") is False
