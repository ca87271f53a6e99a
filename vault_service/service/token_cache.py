"""A bounded in-memory cache of issued tokens, so repeated values skip the database.

Entries are keyed by a BLAKE2b MAC of (type, value as sent) under a random per-process key:
the cache never holds a value, and its keys are useless outside this process. Tokens never
change, so the only invalidation is erasure, which clears the whole cache: this replica's own (at once), and any
erasure it learns of - the erased-token set gaining a hash (`erased_version`: the next Tokenize clears the cache
before it looks anything up, whatever `vault.erasure_count` says: attack 45, A45-2) or the erasure mark moving.

Eviction is by generations: new entries go to the young half; when it is full it becomes the
old half and the previous old half is dropped; a hit in the old half moves the entry back to
the young one. Values in use survive a turnover, and a full cache forgets its older half
rather than everything at once (which emptied it every `capacity` new values and sent every
repeated value to the database until it filled again). No per-hit bookkeeping, as an LRU
list would need.

Erasure must not be undone by a call that was under way: `clear()` starts a new epoch, and a
token looked up in an earlier epoch is not kept (`put` takes the epoch its lookup began in).
Moves between the generations and `clear()` hold one lock, so a clear cannot land between
the two halves of a move and bring old entries back.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence

from vault_service.domain.token_types import TokenType


class TokenCache:
    """(type, value) -> token, at most `capacity` entries, in two generations of half that."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._half = max(1, capacity // 2)
        # Keyed once; each key() copies the keyed state (0.65 µs against 1.6 µs re-keying).
        self._keyed = hashlib.blake2b(key=os.urandom(32), digest_size=16)
        self._young: dict[bytes, str] = {}
        self._old: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self.epoch = 0
        """Incremented by every `clear()`; pass the value read before a lookup to `put`."""
        self.erased_version = 0
        """The erased-token set's `version` this cache was last cleared for (`clear(erased_version)`)."""
        self.hits = 0
        self.misses = 0

    def key(self, token_type: TokenType, value: str) -> bytes:
        """The cache key of a value: a MAC, not the value."""
        state = self._keyed.copy()
        state.update(token_type.prefix.encode() + b"\x00" + value.encode("utf-8", "surrogatepass"))
        return state.digest()

    def keys(self, token_type: TokenType, values: Sequence[str]) -> list[bytes]:
        """`key()` of each value, in order (the keyed state and the type's prefix bound once)."""
        keyed_copy = self._keyed.copy
        prefix = token_type.prefix.encode() + b"\x00"
        keys = []
        for value in values:
            state = keyed_copy()
            state.update(prefix + value.encode("utf-8", "surrogatepass"))
            keys.append(state.digest())
        return keys

    def get_many(self, keys: Sequence[bytes]) -> list[str | None]:
        """`get()` of each key, in order: the young half's hits in one pass, the rest under one hold of the lock."""
        tokens = list(map(self._young.get, keys))
        if None in tokens and self._old:
            with self._lock:
                kept = False
                for index, token in enumerate(tokens):
                    if token is None:
                        token = self._old.pop(keys[index], None)  # not bound: a turnover replaces it
                        if token is not None:
                            self._keep(keys[index], token)  # in use: survives the next turnover
                            kept = True
                        elif kept:  # an earlier key of the batch, the same, may have moved it to the young half
                            token = self._young.get(keys[index])
                        tokens[index] = token
        misses = tokens.count(None)
        self.misses += misses
        self.hits += len(tokens) - misses
        return tokens

    def _from_old(self, key: bytes) -> str | None:
        with self._lock:
            token = self._old.pop(key, None)
            if token is not None:
                self._keep(key, token)  # in use: survives the next turnover
        return token

    def get(self, key: bytes) -> str | None:
        """The cached token, counting the hit or miss."""
        token = self._young.get(key)
        if token is None:
            token = self._from_old(key)
        if token is None:
            self.misses += 1
            return None
        self.hits += 1
        return token

    def put(self, key: bytes, token: str, epoch: int) -> None:
        """Remember a token found or issued by a lookup that began in `epoch` (ignored if cleared since)."""
        if self._capacity <= 0:
            return
        with self._lock:
            if epoch == self.epoch:
                self._keep(key, token)

    def put_many(self, keys: Sequence[bytes], tokens: Sequence[str], epoch: int) -> None:
        """`put()` of each (key, token) pair, under one hold of the lock."""
        if self._capacity <= 0:
            return
        with self._lock:
            if epoch != self.epoch:
                return
            room = self._half - len(self._young)
            if len(keys) < room:  # no turnover in this batch: one dict update
                self._young.update(zip(keys, tokens, strict=True))
                return
            keep = self._keep
            for key, token in zip(keys, tokens, strict=True):
                keep(key, token)

    def _keep(self, key: bytes, token: str) -> None:
        """Under the lock."""
        self._young[key] = token
        if len(self._young) >= self._half:
            self._old, self._young = self._young, {}

    def clear(self, erased_version: int | None = None) -> None:
        """Forget everything (after an erasure); tokens of lookups under way are not kept.

        `erased_version`: the erased-token set's version this clear is for (Tokenize clears the cache before a lookup
        whenever the set gained a hash since: attack 45, A45-2).
        """
        with self._lock:
            self.epoch += 1
            self._young, self._old = {}, {}
            if erased_version is not None:
                self.erased_version = erased_version

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
