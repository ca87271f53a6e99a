"""The data keys in memory: unwrapped once at start through Vault, then used locally."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vault_service.domain.crypto import DataKey
from vault_service.domain.errors import KeysUnavailable
from vault_service.service.ports import KeyStore, KeyWrapper

ENCRYPTION = "encryption"
FINGERPRINT = "fingerprint"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRing:
    """Plaintext data keys by id, and which ones are active for new tokens."""

    keys: dict[int, DataKey]
    active_encryption_id: int
    fingerprint_key_id: int

    @property
    def active_encryption_key(self) -> DataKey:
        """The DEK new values are sealed under."""
        return self.keys[self.active_encryption_id]

    @property
    def fingerprint_key(self) -> DataKey:
        """The key of the lookup fingerprints."""
        return self.keys[self.fingerprint_key_id]

    def key(self, key_id: int) -> DataKey:
        """A loaded key by id; KeysUnavailable when it is not loaded (e.g. retired)."""
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeysUnavailable(f"data key {key_id} is not loaded (retired or not yet rewrapped)") from None


def _make_wrapped(wrapper: KeyWrapper) -> str:
    _, wrapped = wrapper.new_data_key()
    return wrapped


def load_keyring(store: KeyStore, wrapper: KeyWrapper) -> KeyRing:
    """Ensure an active DEK and fingerprint key exist, then unwrap every usable key."""
    active = {
        purpose: store.ensure_active_key(purpose, lambda: _make_wrapped(wrapper))
        for purpose in (ENCRYPTION, FINGERPRINT)
    }
    keys = {
        stored.key_id: DataKey(stored.key_id, wrapper.unwrap(stored.wrapped_key))
        for stored in store.load_keys()
        if stored.state != "retired"
    }
    log.info("data keys loaded", extra={"key_count": len(keys)})
    return KeyRing(keys, active[ENCRYPTION].key_id, active[FINGERPRINT].key_id)
