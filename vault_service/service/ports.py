"""The interfaces the use cases need; adapters implement them, unit tests fake them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vault_service.domain.audit import AuditEvent


@dataclass(frozen=True)
class StoredKey:
    """A row of vault.data_keys: a data key wrapped by the KEK."""

    key_id: int
    purpose: str  # "encryption" | "fingerprint"
    wrapped_key: str
    state: str  # "active" | "decrypt_only" | "retired"


@dataclass(frozen=True)
class NewTokenRow:
    """A token to insert, with its sealed value."""

    token: str
    token_type: str
    fingerprint: bytes
    fingerprint_key_id: int
    dek_id: int
    sealed: bytes


@dataclass(frozen=True)
class StoredToken:
    """A token row as read for detokenization; `sealed` is None once erased."""

    token: str
    token_type: str
    dek_id: int
    sealed: bytes | None


class KeyWrapper(Protocol):
    """The KEK in Vault Transit: makes and unwraps data keys; never gives out the KEK."""

    def new_data_key(self) -> tuple[bytes, str]:
        """A fresh 256-bit key: (plaintext, wrapped)."""
        ...

    def unwrap(self, wrapped_key: str) -> bytes:
        """The plaintext of a wrapped data key."""
        ...


class KeyStore(Protocol):
    """Persistent wrapped data keys."""

    def load_keys(self) -> list[StoredKey]:
        """Every key row."""
        ...

    def ensure_active_key(self, purpose: str, make_wrapped_key: Callable[[], str]) -> StoredKey:
        """The active key of `purpose`, created with `make_wrapped_key()` if none exists.

        Safe against replicas starting at once: exactly one key ends up active.
        """
        ...


class TokenStore(Protocol):
    """Persistent tokens, found by fingerprint or by token text."""

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, str]:
        """Fingerprint -> token for the fingerprints already known."""
        ...

    def insert_new(self, rows: Sequence[NewTokenRow]) -> dict[bytes, str]:
        """Insert rows; where another writer won the race, return its token instead."""
        ...

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        """The rows of the tokens that exist."""
        ...


class AuditLog(Protocol):
    """Append-only audit log."""

    def append(self, event: AuditEvent) -> None:
        """Write one record durably, or raise."""
        ...
