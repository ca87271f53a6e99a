"""Purposes a client had withheld for spelling or naming a value, remembered so a later identical one is too.

An erasure the erase burst splits into calls, device first (attack 15, finding 4): the device call's
purpose `GDPR-2026-801-<device id>` spells its own value and is withheld; once the device is
erased nothing in the vault can recognize that id any more, so the ip call, with the same purpose,
kept it verbatim for good. The vault therefore remembers, per client, each purpose it withheld (or
refused, on a plain reveal) because it spelled a value of the call or named a value stored for
another call, and withholds that client's later call with the identical purpose.

- In process memory only, per replica, never stored: a persistent keyed hash of purposes would let
  whoever holds the key test guesses of values erased since (docs/threat-model.md). Entries are a
  keyed digest of (client, purpose) under a key drawn at start and never written anywhere, so a
  memory dump shows no purpose in clear from here (the process sees each purpose anyway), with
  what was withheld: the whole purpose, or the indices of the groups of the runs that named a
  stored value (`vault_service.domain.purpose_spans`; insider round 16, #2), withheld again alike.
- Per client: remembered for any client, a withhold would blank the same reference for every
  client; one able to make a reference spell a value of its own call (a masked reveal of an ip a
  producer stored for it: `GDPR-2026-0042` reads as 32.38.0.66) could then blank other clients'
  references at will, the denial attack 15, finding 2 made through the stored-value lookup. A
  split erasure is one client's: the erase burst is metered per client.
- Only withholds for spelling or naming a value: not one for a value not compared (an erased token
  named), which any client could cause with any purpose.
- Bounded per client: MAX_REMEMBERED_PER_CLIENT entries for each client, the least recently used
  of that client's dropped first, so one client's withheld purposes never evict another's (a client
  spelling its own masked values in ten thousand purposes evicted the officer's entry from one
  shared bound; review 16, finding 7). Only clients the policy lets reveal or erase reach here (a
  call refused for permission is never remembered), so the whole is bounded by the policy's clients.
  Each entry is kept `remembered_for(policy)` (see there) after its last withhold, so a split
  erasure of many calls stays covered throughout.

Left: a later call on another replica, or after a restart, is not covered by this memory (it keeps
the purpose unless it spells or names a value itself); so is the identical purpose written by
another client. For an Erase, the case of attack 15, finding 4 (a device id of a model or serial
shape, or an ip written as an address) no longer depends on it: such a purpose is withheld by its
shape alone on every replica (`vault_service.domain.purpose_runs.shaped_as_a_stored_value`;
review 16, finding 2). What is left to this memory there is a device id of words and numbers only
(`ABC-1234-XYZ`) and an ip written as a number.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from vault_service.domain.policy import AccessPolicy
from vault_service.domain.purpose_spans import every_group

MAX_REMEMBERED_PER_CLIENT = 256
"""Purposes remembered per client and replica (16-byte digests: about 40 kB per client with the dict's
overhead at most). A split erasure needs one entry; an officer working on many requests at once, one
per request in flight."""
MIN_REMEMBERED_SECONDS = 12 * 3600.0
"""The least time a withheld purpose is remembered: twice the default erase burst's full refill
(100 tokens at 0.005/s: 20,000 s, 5.6 h), rounded up to half a day."""
MAX_REMEMBERED_SECONDS = 7 * 24 * 3600.0
"""The most: a policy with a very slow erase rate would otherwise keep entries for weeks."""


def remembered_for(policy: AccessPolicy) -> float:
    """How long a withheld purpose is remembered: twice the longest full refill of any erase limit, within bounds.

    An erasure the erase burst splits resumes once the bucket refills: at the latest one full
    refill (burst / rate) after it emptied, 5.6 h for the default 100 at 0.005/s. Twice that leaves
    room for an officer who resumes later than the bucket allows; at least MIN_REMEMBERED_SECONDS,
    at most MAX_REMEMBERED_SECONDS.
    """
    limits = [policy.default_limits.erase, *policy.limits_of("erase").values()]
    refills = [limit.burst / limit.per_second for limit in limits if limit.per_second > 0]
    longest = max(refills, default=0.0)
    return min(max(2 * longest, MIN_REMEMBERED_SECONDS), MAX_REMEMBERED_SECONDS)


class WithheldPurposes:
    """The purposes withheld per client for spelling or naming a value, in process memory (thread-safe).

    Each client has its own least-recently-used bound (`capacity_per_client`): one client's
    entries never push out another's.
    """

    def __init__(
        self,
        ttl: float = MIN_REMEMBERED_SECONDS,
        capacity_per_client: int = MAX_REMEMBERED_PER_CLIENT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._capacity = capacity_per_client
        self._clock = clock
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)  # never written anywhere: gone with the process
        self._by_client: dict[str, OrderedDict[bytes, tuple[float, frozenset[int] | None]]] = {}

    def __len__(self) -> int:
        with self._lock:
            return sum(map(len, self._by_client.values()))

    def digests(self) -> list[bytes]:
        """Every remembered entry as kept: keyed digests only, never a purpose (for tests and dumps)."""
        with self._lock:
            return [digest for since in self._by_client.values() for digest in since]

    def _digest(self, client: str, purpose: str) -> bytes:
        keyed = hashlib.blake2b(key=self._key, digest_size=16, person=b"tv-withheld")
        keyed.update(client.encode("utf-8", "surrogatepass"))
        keyed.update(b"\x00")
        keyed.update(purpose.encode("utf-8", "surrogatepass"))
        return keyed.digest()

    def remember(self, client: str, purpose: str, groups: frozenset[int] | None = None) -> None:
        """Remember that `client`'s `purpose` was withheld (or refused) for spelling or naming a value.

        `groups`: the indices of the groups withheld (a purpose naming a stored value keeps the
        rest, `vault_service.domain.purpose_spans`); None, the whole purpose. Remembered again, the
        groups are added to those remembered.
        """
        digest = self._digest(client, purpose)
        now = self._clock()
        with self._lock:
            since = self._by_client.setdefault(client, OrderedDict())
            before = since.get(digest)
            withheld = None if groups is None or (before is not None and before[1] is None) else groups
            if withheld is not None and before is not None and before[1] is not None:
                withheld = withheld | before[1]
            since[digest] = (now, withheld)
            since.move_to_end(digest)
            while len(since) > self._capacity:
                since.popitem(last=False)

    def withheld_before(self, client: str, purpose: str) -> frozenset[int]:
        """The groups of `client`'s identical `purpose` withheld within the TTL (all when whole), renewed; else none."""
        digest = self._digest(client, purpose)
        now = self._clock()
        with self._lock:
            since = self._by_client.get(client)
            entry = since.get(digest) if since is not None else None
            if since is None or entry is None:
                return frozenset()
            at, groups = entry
            if now - at >= self._ttl:
                del since[digest]
                if not since:
                    del self._by_client[client]
                return frozenset()
            since[digest] = (now, groups)
            since.move_to_end(digest)
        return every_group(purpose) if groups is None else groups
