"""The data keys in memory: unwrapped through Vault, then used locally.

`KeyRing` is an immutable snapshot; `KeyManager` swaps in a fresh one when keys rotate. A
refresh asks Vault only for keys not yet in memory, so an outage of Vault does not stop the
service from using the keys it already holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from vault_service.domain.crypto import DataKey
from vault_service.domain.errors import KeysUnavailable
from vault_service.domain.key_check import check_value
from vault_service.domain.keys import KeyPurpose, KeyState, may_decrypt
from vault_service.service.ports import KeyGeneration, KeyStore, KeyWrapper, NewKey, StoredKey

ENCRYPTION = KeyPurpose.ENCRYPTION
FINGERPRINT = KeyPurpose.FINGERPRINT
AUDIT = KeyPurpose.AUDIT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRing:
    """Plaintext data keys by id, and which ones new tokens are written with."""

    keys: Mapping[int, DataKey]
    generation: KeyGeneration
    audit_key_ids: tuple[int, ...] = ()
    """Keys of the audit's keyed token hashes (who saw what), newest last; loaded whatever their state."""

    @property
    def audit_key(self) -> DataKey:
        """The key reveals are hashed with in the audit log."""
        if not self.audit_key_ids:
            raise KeysUnavailable("no audit key in vault.data_keys")
        return self.keys[self.audit_key_ids[-1]]

    @property
    def audit_keys(self) -> list[DataKey]:
        """Every audit key, to find reveals hashed under any of them."""
        return [self.keys[i] for i in self.audit_key_ids]

    @property
    def active_encryption_key(self) -> DataKey:
        """The DEK new values are sealed under."""
        return self.keys[self.generation.encryption_id]

    @property
    def fingerprint_key(self) -> DataKey:
        """The key of the lookup fingerprints."""
        return self.keys[self.generation.fingerprint_id]

    @property
    def pending_fingerprint_key(self) -> DataKey | None:
        """The fingerprint key being introduced by a re-index, if one is under way."""
        pending = self.generation.pending_fingerprint_id
        return self.keys[pending] if pending is not None else None

    def key(self, key_id: int) -> DataKey:
        """A loaded key by id; KeysUnavailable when it is not loaded (e.g. retired)."""
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeysUnavailable(f"data key {key_id} is not loaded (retired or not yet rewrapped)") from None


def _one_key_under_two_ids(rows: list[StoredKey], keys: Mapping[int, DataKey]) -> str | None:
    """Why `keys` may not be used: two key ids that hold one key; None when each id is a key of its own."""
    return one_key_under_two_ids(rows, {key_id: check_value(key.material) for key_id, key in keys.items()})


def one_key_under_two_ids(rows: list[StoredKey], checks: Mapping[int, bytes]) -> str | None:
    """Why the keys of `rows` may not be used: two key ids that hold one key; None when each is a key of its own.

    A key's material never comes back under a new id (migration 0027; attack 24, F1: a retired DEK
    inserted again as the active one made crypto-shredding shred nothing). Compared by check value:
    each loaded key's own (`checks`: key id -> the check value of its unwrapped material), and the one
    each row records (a retired key's row is not loaded).
    """
    ids_of: dict[bytes, set[int]] = {}
    for row in rows:
        if row.check_value is not None:
            ids_of.setdefault(bytes(row.check_value), set()).add(row.key_id)
    for key_id, value in checks.items():
        ids_of.setdefault(value, set()).add(key_id)
    twice = sorted(sorted(ids) for ids in ids_of.values() if len(ids) > 1)
    if not twice:
        return None
    return (
        f"data keys {' and '.join(map(str, twice[0]))} are one key (one check value): a key's material came back"
        " under a new id, and what was shredded with the old one opens again. Not loading them; the database"
        " owner retires the newer id (see the data-key rows of the audit log and vault.data_key_check_values)"
    )


def generation_of(rows: list[StoredKey]) -> KeyGeneration:
    """The keys new values are written with, as `rows` (every row of vault.data_keys) say; KeysUnavailable if none."""

    def one(purpose: KeyPurpose, state: KeyState) -> int | None:
        return next((r.key_id for r in rows if r.purpose == purpose and r.state == state), None)

    encryption, fingerprint = one(ENCRYPTION, KeyState.ACTIVE), one(FINGERPRINT, KeyState.ACTIVE)
    if encryption is None or fingerprint is None:
        raise KeysUnavailable("no active data keys in vault.data_keys")
    return KeyGeneration(encryption, fingerprint, one(FINGERPRINT, KeyState.PENDING))


def loaded(row: StoredKey) -> bool:
    """Whether the service loads the key of `row`: any key not retired, and every audit key (they only hash)."""
    return may_decrypt(row.state) or row.purpose == AUDIT


class KeyManager:
    """Holds the current KeyRing; refreshes it on rotation and rewraps keys on KEK rotation."""

    def __init__(self, store: KeyStore, wrapper: KeyWrapper) -> None:
        self._store = store
        self._wrapper = wrapper
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None

    def start(self) -> KeyRing:
        """Ensure an active DEK and fingerprint key exist (first start), then load every usable key.

        KeysUnavailable when no fingerprint key is active while values are fingerprinted under a
        retired one: a new key would silently give each of them a second token.
        """
        for purpose in (ENCRYPTION, FINGERPRINT, AUDIT):
            self._store.ensure_active_key(purpose, self.new_key)
        return self.refresh()

    def new_key(self) -> NewKey:
        """A fresh data key from Vault, wrapped, with its check value."""
        plaintext, wrapped = self._wrapper.new_data_key()
        return NewKey(wrapped, check_value(plaintext))

    def unwrapped(self, row: StoredKey) -> DataKey:
        """The plaintext key of `row` (a Transit call); KeysUnavailable when it is not the key its check value names."""
        key = DataKey(row.key_id, self._wrapper.unwrap(row.wrapped_key))
        if row.check_value is not None and check_value(key.material) != row.check_value:
            raise KeysUnavailable(
                f"data key {row.key_id} ({row.purpose}) is not the key made under that id (its check value"
                " differs): its wrapped key was replaced. The database owner restores it from"
                " vault.replaced_wrapped_keys"
            )
        return key

    @property
    def ring(self) -> KeyRing:
        """The current snapshot."""
        if self._ring is None:
            raise KeysUnavailable("data keys are not loaded yet")
        return self._ring

    def refresh(self) -> KeyRing:
        """Reload key rows; unwrap (through Vault) only keys not in memory yet; drop retired ones.

        Audit keys are loaded whatever their state: they only hash, and the reveals hashed under
        them are found only with them. A key without a check value gets one recorded (once).
        KeysUnavailable when two key ids hold one key (a key's material back under a new id).
        """
        with self._lock:
            rows = self._store.load_keys()
            held = self._ring.keys if self._ring else {}
            keys = {}
            for row in rows:
                if not loaded(row):
                    continue
                keys[row.key_id] = held.get(row.key_id) or self.unwrapped(row)
            unchecked = {
                r.key_id: check_value(keys[r.key_id].material)
                for r in rows
                if r.check_value is None and r.key_id in keys
            }
            if (twice := _one_key_under_two_ids(rows, keys)) is not None:
                raise KeysUnavailable(twice)
            self._store.record_check_values(unchecked)
            audit_ids = tuple(r.key_id for r in rows if r.purpose == AUDIT and r.key_id in keys)
            ring = KeyRing(keys, generation_of(rows), audit_ids)
            if self._ring is None or ring.generation != self._ring.generation or keys.keys() != held.keys():
                log.info("data keys loaded", extra={"key_count": len(keys), "generation": str(ring.generation)})
            self._ring = ring
            return ring

    def retired_key(self, key_id: int) -> DataKey:
        """Data key `key_id` unwrapped whatever its state (a retired key is not in the ring); KeysUnavailable.

        For the check of a retired key's kept copies before the KEK version wrapping it is retired.
        """
        row = next((r for r in self._store.load_keys() if r.key_id == key_id), None)
        if row is None:
            raise KeysUnavailable(f"no data key {key_id} in vault.data_keys")
        return self.unwrapped(row)

    def key(self, key_id: int) -> DataKey:
        """A key by id, refreshing once if it was added since the last refresh."""
        ring = self.ring
        if key_id in ring.keys:
            return ring.keys[key_id]
        return self.refresh().key(key_id)

    def rewrap_outdated(self) -> int:
        """Rewrap every loaded key (live, or an audit key) wrapped by an older KEK version; how many."""
        latest = self._wrapper.latest_version()
        count = 0
        for row in self._store.load_keys():
            if (may_decrypt(row.state) or row.purpose == AUDIT) and row.kek_version < latest:
                self._store.update_wrapping(row.key_id, self._wrapper.rewrap(row.wrapped_key))
                count += 1
        if count:
            log.info("data keys rewrapped", extra={"count": count, "kek_version": latest})
        return count
