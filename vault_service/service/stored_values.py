"""Does a purpose name a value stored in the vault? Asked before a purpose is kept in clear.

A purpose is compared with the values its own call reveals or erases (`revealing.py`). One naming
a value of another call was kept verbatim for good: an erasure the erase burst splits into calls
(the ip call keeps `GDPR-2026-801-<device id>`, then the device is erased), or a masked reveal of
an ip with `INC-<device id>` (attack 14, finding 3). The vault can recognize such a value while
it is stored: its fingerprint is in vault.tokens. So before a purpose is kept in clear, each value
of the shape of a value it could name (`purpose.stored_candidates`: serial-shaped runs as device
ids, whole addresses as ips; never a single group or a word and its number, which a producer could
store to blank a class of references, review 15, finding 1) is fingerprinted for its type,
with the same keyed fingerprint Tokenize uses to find a value's token (and the pending key's
during a fingerprint-key rotation), and looked up in one indexed query (`TokenStore.stored_among`),
which also looks up each 22-character window of the purpose as a token id (`purpose.token_ids_in`:
a token of another call split by separators, attack 14, finding 7); a token id found counts only if
its row's value opens under its data key (a row the serving role planted with a chosen id never
does; attack 27, F7).
A hit withholds the runs of groups that read as the stored value, each replaced by `(withheld)`,
and keeps the rest of the reference (`vault_service.domain.purpose_spans`; insider round 16, #2: a
producer storing `INC2026Q3` blanked every `INC-2026Q3-...` reference whole); a token id found
withholds the whole purpose (its pieces need not be whole groups). It is never refused: a refusal
would tell the caller that a value it guessed is stored (an existence oracle). The caller is
answered the same either way; only the audit row (which callers do not read) differs.

One lookup per distinct purpose, cached LOOKUP_TTL_SECONDS per replica (see there for why that
long); a purpose of more than MAX_CANDIDATES values is withheld without one, and so is one that
may hold a token's random part written with extra separators (`purpose.may_hold_a_token`). A usual reference
has no candidate at all (`GDPR-2026-0042`, `ALERT-2026-000123`): only its 22-character windows
are looked up as token ids, and a purpose shorter than that sends no query. What this cannot
recognize: a value not (or no longer) stored when the call runs; a device id written with other
separators than stored, or in mixed case other than as stored (as written, upper and lower case
are looked up), or of words and numbers only; another call's ip written as a number (hex, decimal,
hex halves or octets), which any reference could read as by chance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from vault_service.domain.crypto import DataKey, SealBroken, fingerprints, open_sealed
from vault_service.domain.errors import InvalidValue, KeysUnavailable
from vault_service.domain.purpose import StoredCandidates, may_hold_a_token, stored_candidates, token_ids_in
from vault_service.domain.purpose_spans import every_group
from vault_service.domain.token_types import TokenType, normalize_many
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import TokenStore

log = logging.getLogger(__name__)

LOOKUP_TTL_SECONDS = 30.0
"""How long a replica trusts its answer for a purpose. A lookup is point-in-time anyway: a value
first stored after the call is never recognized, so caching a miss for 30 s only widens that window
by 30 s, for a value tokenized within 30 s after the same purpose was last looked up. A cached hit
keeps withholding for up to 30 s after the value is erased (the safe side). A client's purposes
repeat over a working session of minutes, so nearly every call is answered from the cache."""
MAX_CANDIDATES = 128
"""The most values a purpose is looked up by. With the shape floor (`purpose.stored_candidates`) a
usual reference has none (`GDPR-2026-0042`, `REQ-2026-12-04-ABC123-DEF456-GHI789`), one naming a
device 8-40 (`GDPR-2026-801-SM-G991B-QWERTYUI` 32); only a purpose of many short groups several
of them serial-shaped has more (`K2L-BC-DE-FG-HI-J3K-NO-QR-TU-WX-Z4Y-MN-PQ-RS` 256), each a
fingerprint and an index probe (about 10 µs each: 4.6 ms at 479 values before the floor). Such a
purpose is withheld without a lookup: a client that wants its purpose left out can do so anyway
(docs/threat-model.md, *What the audit trail proves*), and the work per distinct purpose stays
near a millisecond."""
MAX_CACHED_PURPOSES = 4096
"""Purposes cached per replica (at most 64 characters each: well under 1 MB); the oldest go first."""


class StoredValueLookup:
    """Which groups of a purpose name a value stored in the vault, cached per distinct purpose (thread-safe)."""

    def __init__(
        self,
        tokens: TokenStore,
        keys: KeyManager,
        ttl: float = LOOKUP_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = tokens
        self._keys = keys
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, int, int | None], tuple[float, frozenset[int]]] = {}
        self.lookups = 0
        """Queries sent (cache misses), for tests and metrics."""

    def names_a_stored_value(self, purpose: str) -> bool:
        """Whether one of the values `purpose` could name is stored (not erased) in the vault."""
        return bool(self.groups_naming_stored_values(purpose))

    def groups_naming_stored_values(self, purpose: str) -> frozenset[int]:
        """The groups (indices) of `purpose` to withhold: those of each run that reads as a stored value.

        Every group when the purpose holds a token's id or may hold its random part, or has more than
        MAX_CANDIDATES candidates (withheld whole without a lookup); none when nothing is stored.
        Raises StorageError when the lookup cannot be made: the call then fails rather than keep
        a purpose unchecked.
        """
        ring = self._keys.ring
        pending = ring.pending_fingerprint_key
        key = (purpose, ring.fingerprint_key.key_id, pending.key_id if pending is not None else None)
        now = self._clock()
        with self._lock:
            cached = self._answers.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        candidates = stored_candidates(purpose)
        if candidates.size > MAX_CANDIDATES or may_hold_a_token(purpose):
            withheld = every_group(purpose)
        else:
            withheld = self._lookup(purpose, candidates, ring.fingerprint_key, pending)
        with self._lock:
            self.lookups += 1
            if len(self._answers) >= MAX_CACHED_PURPOSES:
                del self._answers[next(iter(self._answers))]  # the oldest entry (dicts keep insertion order)
            self._answers.pop(key, None)
            self._answers[key] = (now, withheld)
        return withheld

    def _lookup(
        self, purpose: str, candidates: StoredCandidates, current: DataKey, pending: DataKey | None
    ) -> frozenset[int]:
        """The groups of each run of `purpose` whose candidate is stored as a value of its type; all on a token."""
        token_ids = sorted(token_ids_in(purpose))
        if not candidates.size and not token_ids:
            return frozenset()  # a usual reference shorter than a token: nothing to look up
        types: list[str] = []
        fps: list[bytes] = []
        read_as: dict[tuple[str, bytes], str] = {}  # (type, fingerprint) -> the candidate it fingerprints
        for token_type in TokenType:
            wanted = sorted(candidates.ips if token_type is TokenType.IP else candidates.device_ids)
            judged, _ = normalize_many(token_type, wanted)
            values = {v: written for v, written in zip(judged, wanted, strict=True) if isinstance(v, str)}
            ordered = sorted(values)
            for fp_key in (current, pending) if pending is not None else (current,):
                found = fingerprints(fp_key, token_type, ordered)
                read_as.update(((token_type.type_name, fp), values[v]) for fp, v in zip(found, ordered, strict=True))
                fps.extend(found)
                types.extend([token_type.type_name] * len(found))
        hits = self._tokens.stored_among(types, fps, token_ids)
        if hits.token and self._any_issued_by_the_vault(token_ids):
            return every_group(purpose)  # a token of another call, maybe split: no run of groups says which
        named = [(t, read_as[(t, fp)]) for t, fp in zip(types, fps, strict=True) if fp in hits.fingerprints]
        # Found or not, the same steps: the groups each value is read from were recorded by the walk
        # that found the candidates, so a hit is a few dict lookups more (review 18, R18-8).
        return candidates.groups_reading_as(
            [value for t, value in named if t == TokenType.DEVICE_ID.type_name],
            [value for t, value in named if t == TokenType.IP.type_name],
        )

    def _any_issued_by_the_vault(self, token_ids: list[str]) -> bool:
        """Whether one of `token_ids` holds a value that opens under its data key: a token the vault issued.

        A row with a token id of a chosen random part is one INSERT for the serving role (attack 27,
        F7: `ip_INVESTIGATION-2026-12-` blanked every reference of that month), but its value cannot
        open: the role holds no data key. Only rows that open count; so an erased token (no value
        left to name) no longer withholds a purpose either.
        """
        for row in self._tokens.fetch(token_ids).values():
            if row.sealed is None:
                continue
            try:
                open_sealed(self._keys.key(row.dek_id), TokenType.from_name(row.token_type), row.token, row.sealed)
            except (SealBroken, KeysUnavailable, InvalidValue):
                continue  # planted (or under a retired key: unreadable, as erased)
            return True
        return False
