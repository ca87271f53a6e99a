"""The erased tokens this replica knows of, by their keyed audit hashes: held in memory, out of the owner's table.

Until attack 43 the vault learned that a token is erased only from its row in `vault.tokens` (`erased_at`,
`sealed`), which the database owner controls: he wrote the value back with `erased_at` cleared (A43-3),
added a second row for the token beside the erased one (A43-4), or had a trigger deferred to commit copy
each erased row back (A43-5), and the next Tokenize of the value handed the erased token out again.

So each replica keeps the keyed hashes (`revealing.reveal_hasher`, 16 bytes) of the tokens erased, fed from
- its own erasures (at once, `add`), and
- the erase rows of the audit chain (`learn`: all of them at start, then the rows after the newest one read,
  each key-check round): rows the owner cannot delete unseen (the chain and its signed, exported checkpoints;
  `audit verify` names a missing row), and the rows another replica's erasure writes.
A token in the set is never revealed nor handed out, whatever its row says (`marked_rows`, `marked_found`
mark its rows erased: Detokenize answers NOT_FOUND for a row without a value, DATA_LOSS for one holding a
value again, as 76bead3 does; Tokenize's found row is DATA_LOSS, never a token). A value erased and
tokenized again later is not found by fingerprint (the erasure cleared it) and gets a new token, not in
the set: no false alarm.

Cost: nothing while the set is empty (one truthiness test per call); otherwise one keyed BLAKE2b per
found/fetched token and loaded audit key (the state copied, ~0.4-0.6 us) and a set probe. Memory: one
16-byte `bytes` in a set, ~33 + 16 bytes object plus ~30 bytes of set slot: about 80-100 bytes per erased
token (a million erasures: ~100 MB).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from vault_service.service.ports import FoundToken, StoredToken

log = logging.getLogger(__name__)

OVERLAP_IDS = 1000
"""Erase rows are read again from this many ids before the newest read: an erase row whose id was handed out
before a row already read but committed after it is still learned (the set only grows; a row read twice is
harmless)."""

Hasher = Callable[[str], bytes]


class EraseRows(Protocol):
    """Where the erase rows of the audit chain are read (the token store)."""

    def erase_rows(self, after_id: int) -> list[tuple[int, list[bytes]]]:
        """(id, keyed hashes named) of every served erase row after `after_id`; then (the log's newest id, none)."""
        ...


class ErasedTokens:
    """The keyed audit hashes of the erased tokens this replica knows of (see the module docstring)."""

    def __init__(self) -> None:
        self._hashes: set[bytes] = set()
        self._newest = 0
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, hashes: Iterable[bytes]) -> None:
        """Remember hashes of erased tokens (this replica's own erasure, before it answers)."""
        with self._lock:
            self._hashes.update(hashes)

    def learn(self, rows: EraseRows) -> int:
        """Read the erase rows written since the last read (all of them the first time); how many hashes were new."""
        with self._lock:
            after = max(0, self._newest - OVERLAP_IDS)
        found = rows.erase_rows(after)
        with self._lock:
            before = len(self._hashes)
            for row_id, hashes in found:
                self._hashes.update(h for h in hashes if h)
                self._newest = max(self._newest, row_id)
            return len(self._hashes) - before

    def erased(self, hashers: Sequence[Hasher], tokens: Iterable[str]) -> set[str]:
        """The tokens among `tokens` whose keyed hash (under any of `hashers`) is a known erased token's."""
        known = self._hashes
        if len(hashers) == 1:  # one audit key loaded, the usual case: no generator per token
            (hash_of,) = hashers
            return {token for token in tokens if hash_of(token) in known}
        return {token for token in tokens if any(hash_of(token) in known for hash_of in hashers)}

    def marked_rows(self, hashers: Sequence[Hasher], rows: dict[str, StoredToken]) -> dict[str, StoredToken]:
        """Detokenize's fetched rows with those of known erased tokens marked erased (never revealed)."""
        hit = self.erased(hashers, [token for token, row in rows.items() if not row.erased])
        if not hit:
            return rows
        marked = dict(rows)
        for token in hit:
            marked[token] = rows[token]._replace(erased=True)
        log.error(
            "a token erased before has a row that does not say so in vault.tokens: the erasure was undone in the"
            " database; treated as erased. Report it to the security team",
            extra={"method": "detokenize", "items": len(hit)},
        )
        return marked

    def marked_found(self, hashers: Sequence[Hasher], found: dict[bytes, FoundToken]) -> dict[bytes, FoundToken]:
        """Tokenize's found rows with those of known erased tokens marked erased (never handed out)."""
        hit = self.erased(hashers, [row[1] for row in found.values() if not row[4]])
        if not hit:
            return found
        return {fp: (row[0], row[1], row[2], row[3], True) if row[1] in hit else row for fp, row in found.items()}
