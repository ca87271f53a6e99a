"""A bounded in-memory cache of issued tokens, so repeated values skip the database.

Entries are keyed by a BLAKE2b MAC of (type, value as sent) under a random per-process key:
the cache never holds a value, and its keys are useless outside this process. Tokens never
change, so the only invalidation is erasure, which clears the whole cache.
"""

from __future__ import annotations

import hashlib
import os

from vault_service.domain.token_types import TokenType


class TokenCache:
    """(type, value) -> token, at most `capacity` entries (cleared wholesale when full)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._secret = os.urandom(32)
        self._entries: dict[bytes, str] = {}
        self.hits = 0
        self.misses = 0

    def key(self, token_type: TokenType, value: str) -> bytes:
        """The cache key of a value: a MAC, not the value."""
        data = token_type.prefix.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._secret, digest_size=16).digest()

    def get(self, key: bytes) -> str | None:
        """The cached token, counting the hit or miss."""
        token = self._entries.get(key)
        if token is None:
            self.misses += 1
        else:
            self.hits += 1
        return token

    def put(self, key: bytes, token: str) -> None:
        """Remember a token; when full, start over (cheap, and tokens are found again in the DB)."""
        if self._capacity <= 0:
            return
        if len(self._entries) >= self._capacity:
            self._entries.clear()
        self._entries[key] = token

    def clear(self) -> None:
        """Forget everything (after an erasure)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
