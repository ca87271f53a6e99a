"""Per-client token buckets: how many values a client may have tokenized or revealed per second.

A bucket holds up to `burst` items and refills at `per_second`; a call takes as many items as
it carries tokens. A call that does not fit is refused whole (nothing is taken). Given a
`SharedBudgets` (the database), buckets are kept in one place that every replica shares and
that outlives a restart, and each process spends leases taken from them; without one, buckets
are kept in the process's memory. Every grant of the shared buckets is also bounded by one of the
process's own at the policy's rate (grant_bound.py): the database's owner can make it grant
anything (attack 22, F6).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from vault_service.domain.errors import RateLimited
from vault_service.domain.grant_bound import GrantBound, expect_client


@dataclass(frozen=True)
class RateLimit:
    """Sustained items per second and the largest burst."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")


class _Bucket:
    __slots__ = ("level", "limit", "updated")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.level = float(limit.burst)
        self.updated = now

    def full_at(self) -> float:
        """When the bucket is full again if nothing more is taken (a bucket made then would be the same)."""
        return self.updated + (self.limit.burst - self.level) / self.limit.per_second

    def take(self, count: int, now: float, keep: int = 0) -> float:
        """0 when `count` items were taken leaving at least `keep`, else the seconds until they would."""
        self.level = min(self.limit.burst, self.level + (now - self.updated) * self.limit.per_second)
        self.updated = now
        if count + keep <= self.level:
            self.level -= count
            return 0.0
        return (count + keep - self.level) / self.limit.per_second


class BucketMap:
    """In-process token buckets by client and key, each at the limit of its client: the one bucket map.

    A bucket's key is apart from its limit's: the limit is the client's (its CN in the policy), the
    bucket is the client's alone (key "": RateLimiter's) or one of several (the key commands' budgets,
    one per certificate, keyed by its serial: review 33, R33-4, `CertificateBuckets`), so the holder of
    one certificate of a client spends nothing of another's.

    A bucket that has refilled to its burst is dropped (`_sweep`): a bucket made anew starts full, so
    dropping it changes no answer - nobody gets a fresh burst by it - and the map holds only the
    buckets taken from within their refill time (burst / rate), not one per key ever seen (attack 40,
    A40-1: 524 bytes per minted certificate, kept for good). Sweeps run when the map has doubled since
    the last one (at least SWEEP_AT buckets), so each costs O(1) per bucket made, amortized.
    """

    SWEEP_AT = 1024
    """The map is swept when it holds this many buckets, or twice what the last sweep kept."""

    def __init__(
        self, limits: Mapping[str, RateLimit], default: RateLimit, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._default = default
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._sweep_at = self.SWEEP_AT
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Buckets held now (full ones included until the next sweep)."""
        return len(self._buckets)

    def limit(self, client: str) -> RateLimit:
        """The limit of each of `client`'s buckets: its own, else the default (limits fail closed, never open)."""
        return self._limits.get(client, self._default)

    def take(self, client: str, key: str = "", count: int = 1, keep: int = 0) -> float:
        """Take `count` items from bucket (`client`, `key`): 0 when taken, else the seconds until they would fit.

        `keep`: items the take must leave in the bucket (a reserve for other takers: the refusal throttle's
        first refusals of each certificate, attack 46, A46-4).
        """
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get((client, key))
            if bucket is None:
                if len(self._buckets) >= self._sweep_at:
                    self._sweep(now)
                bucket = self._buckets[(client, key)] = _Bucket(self.limit(client), now)
            return bucket.take(count, now, keep)

    def give_back(self, client: str, key: str = "", count: int = 1) -> None:
        """Put back `count` items taken from that bucket (the call they were taken for turned out not to count).

        A bucket no longer held was full (`_sweep`): there is nothing to put back.
        """
        with self._lock:
            bucket = self._buckets.get((client, key))
            if bucket is not None:
                bucket.level = min(float(bucket.limit.burst), bucket.level + count)

    def _sweep(self, now: float) -> None:
        """Drop every bucket full again by `now` (as a new one would be); called with the lock held."""
        full = [key for key, bucket in self._buckets.items() if bucket.full_at() <= now]
        for key in full:
            del self._buckets[key]
        self._sweep_at = max(self.SWEEP_AT, 2 * len(self._buckets))


CLIENT_CERTIFICATES = 3
"""A client's certificates together get this many times one certificate's budget (`CertificateBuckets`)."""


class Wait(NamedTuple):
    """A `CertificateBuckets` answer: `seconds` 0 when taken; else how long, and whether the client's bucket refused."""

    seconds: float
    whole_client: bool = False


class CertificateBuckets:
    """The key commands' budgets: per certificate (serial) at the client's limit, per client CLIENT_CERTIFICATES x it.

    Per certificate (review 33, R33-4): the holder of a copy of one of the team's certificates spends that
    certificate's budget, and at most that of the client's; per client (CN) too, as a bucket CLIENT_CERTIFICATES
    times the limit (burst and rate): a client that signs or issues itself certificates at will (the security
    team's `pki/sign` right) no longer gets a fresh budget with each one (attack 40, A40-2: 5 certificates,
    151 `status` scans at once instead of 30). Kept per process.
    """

    def __init__(
        self, limits: Mapping[str, RateLimit], default: RateLimit, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._certificates = BucketMap(limits, default, clock)
        self._clients = BucketMap(
            {client: _times(limit, CLIENT_CERTIFICATES) for client, limit in limits.items()},
            _times(default, CLIENT_CERTIFICATES),
            clock,
        )

    def limit(self, client: str) -> RateLimit:
        """The limit of each of `client`'s certificates (the policy's)."""
        return self._certificates.limit(client)

    def client_limit(self, client: str) -> RateLimit:
        """The limit of `client`'s certificates together."""
        return self._clients.limit(client)

    def take(self, client: str, serial: str) -> Wait:
        """Take one from the certificate's bucket and one from its client's, both or neither."""
        wait = self._certificates.take(client, serial)
        if wait:
            return Wait(wait)
        wait = self._clients.take(client)
        if wait:
            self._certificates.give_back(client, serial)
            return Wait(wait, whole_client=True)
        return Wait(0.0)

    def give_back(self, client: str, serial: str) -> None:
        """Put back one taken by `take` (to both buckets)."""
        self._certificates.give_back(client, serial)
        self._clients.give_back(client)

    def __len__(self) -> int:
        """Buckets held now, per certificate and per client."""
        return len(self._certificates) + len(self._clients)


def _times(limit: RateLimit, factor: int) -> RateLimit:
    return RateLimit(limit.per_second * factor, limit.burst * factor)


LEASE_FRACTION = 20
"""A process takes a twentieth of a client's burst from the shared budget at a time."""

RECHECK_SHARED_SECONDS = 60.0
"""How long a limiter keeps its buckets in memory after the store said it has no shared ones."""


def lease_size(burst: int) -> int:
    """Items a process takes from a client's shared budget at a time (at least 1).

    What a process holds unspent is below this, so in any window of t seconds the replicas
    together let through at most burst + rate * t + replicas * (lease_size(burst) - 1); since the
    budget started, at most burst + rate * t. A twentieth keeps that overshoot at 5 % of the burst
    per replica, and a round trip to the database at one call in 100 for an analyst's
    single-token reveals (burst 2000).
    """
    return max(1, burst // LEASE_FRACTION)


def exact(burst: int) -> int:
    """No lease: every call takes exactly what it needs from the shared budget (erasure)."""
    return 1


class SharedBudgets(Protocol):
    """Buckets kept outside the process (the database), shared by every replica and kept across restarts."""

    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        """Take at least `need` and up to `want` items from the client's `kind` bucket.

        (items taken, 0) when `need` fitted, else (0, seconds until it would fit) and nothing is
        taken. None when there are no shared buckets (yet): the limiter then keeps one in memory.
        """
        ...


class _Lease:
    """Items this process took from a client's shared budget and has not spent yet."""

    __slots__ = ("bound", "left", "lock")

    def __init__(self) -> None:
        self.left = 0
        self.lock = threading.Lock()  # per client: a refill's round trip holds up no other client
        self.bound: GrantBound | None = None  # this process's own bound on the shared budget's grants


class RateLimiter:
    """Token buckets by client name.

    A client without a limit of its own gets `default`: limits fail closed, never open. Its buckets in
    memory are a `BucketMap`'s (one bucket a client), the map the key commands' budgets share.
    With `shared`, the buckets are kept there (under `kind`) instead of in this process, and this
    process spends leases of `lease(burst)` items taken from them: a call the lease covers costs
    no round trip. While `shared` has no buckets, they are kept in memory (asked again after
    RECHECK_SHARED_SECONDS). Whatever `shared` grants is bounded by a bucket of this process's
    own at the client's limit (`GrantBound`): beyond it, only what fits is kept, and a call whose
    need does not fit is refused as over the limit.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        default: RateLimit,
        what: str = "detokenize",
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBudgets | None = None,
        kind: str = "",
        lease: Callable[[int], int] = lease_size,
    ) -> None:
        self._memory = BucketMap(limits, default, clock)
        self._what = what
        self._clock = clock
        self._shared = shared
        self._kind = kind or what
        self._lease = lease
        self._leases: dict[str, _Lease] = {}
        self._in_memory_until = 0.0 if shared is not None else float("inf")
        if shared is not None:
            for client in limits:
                expect_client(client, self._kind)

    def take(self, client: str, count: int) -> None:
        """Take `count` items from the client's bucket; RateLimited when they do not fit."""
        limit = self._memory.limit(client)
        if count > limit.burst:
            raise RateLimited(
                f"{count} values in one call exceed the {self._what} burst limit of {limit.burst}"
                f" for client {client!r}; split the call",
                retry_after=count / limit.per_second,
            )
        if self._shared is None:  # buckets in memory only: no lease kept per client (the refusal throttle's keys)
            wait: float | None = None
        else:
            lease = self._leases.get(client) or self._leases.setdefault(client, _Lease())
            with lease.lock:
                if count <= lease.left:  # the hot path: spent from this process's lease
                    lease.left -= count
                    return
                wait = self._take_shared(client, lease, count, limit)
        if wait is None:
            wait = self._memory.take(client, count=count)
        if wait:
            raise RateLimited(
                f"client {client!r} may {self._what} {_rate(limit.per_second)} (burst {limit.burst});"
                f" retry in {wait:.2f} s",
                retry_after=wait,
            )

    def give_back(self, client: str, count: int) -> None:
        """Put back `count` items a call took and did not spend: an erasure that erased nothing (chaos 50, V50-4).

        While the buckets are kept in memory, to the bucket in memory. Else to the shared budget when it has a way
        to take them back (`give_back_budget`; the erase budget's, 0074), and then to this process's own bound on
        its grants; when it cannot (no 0074) or fails, they stay spent - the bound was credited, and then the bucket
        in memory, though neither was what the take spent (review 51, R51-6). Only for an exact limiter (no lease):
        what a call took then came whole from where it is put back.
        """
        if self._shared is None or self._clock() < self._in_memory_until:
            self._memory.give_back(client, count=count)
            return
        give_back_budget = getattr(self._shared, "give_back_budget", None)
        if give_back_budget is None or not give_back_budget(client, self._kind, count, self._memory.limit(client)):
            return  # the shared budget cannot take them back (no 0074): spent
        lease = self._leases.get(client)
        if lease is not None:
            with lease.lock:
                if lease.bound is not None:
                    lease.bound.give_back(count)

    def refusal_telling_only(self, client: str, call_size: int) -> RateLimited:
        """A refusal of a call of `call_size` values that tells nothing but that size and the client's limit.

        For a limit whose need the caller cannot see - new tokens: how many of its values the vault
        does not hold yet - the refusal must not tell the need, nor the bucket's level it was
        compared with: `take`'s text and retry-after counted the values not stored, an exact
        membership oracle that mints nothing (attack 23, F2). Its retry-after is the time the
        bucket takes to refill that many values (at most the burst) from empty, enough for any
        call of that size that can fit at all; it names the burst, which no call's new values may
        exceed, to a call larger than it.
        """
        limit = self._memory.limit(client)
        retry_after = min(call_size, limit.burst) / limit.per_second
        larger = f", or split it: no call gets more than {limit.burst} new tokens" if call_size > limit.burst else ""
        return RateLimited(
            f"client {client!r} may {self._what} {_rate(limit.per_second)} (burst {limit.burst});"
            f" this call of {call_size} values needs more than that allows now: retry in {retry_after:.2f} s{larger}",
            retry_after=retry_after,
        )

    def _take_shared(self, client: str, lease: _Lease, count: int, limit: RateLimit) -> float | None:
        """Renew the client's lease from the shared budget and spend `count` of it: 0, the seconds to wait, or None.

        None: no shared budgets (kept in memory for now). Called with the lease's lock held.
        """
        if self._shared is None or self._clock() < self._in_memory_until:
            return None
        need = count - lease.left
        want = max(need, self._lease(limit.burst))
        got = self._shared.take_budget(client, self._kind, need, want, limit)
        if got is None:
            self._in_memory_until = self._clock() + RECHECK_SHARED_SECONDS
            return None
        granted, wait = got
        if wait:
            # No bucket of this limit makes `need` wait longer than refilling it from empty: a longer
            # figure is the database's (its owner can replace the function) and was passed on as the
            # client's retry-after unbounded - the ETL paused for it (attack 20, finding 4).
            return min(wait, need / limit.per_second)
        now = self._clock()
        if lease.bound is None:
            lease.bound = GrantBound(client, self._kind, limit, now)
        kept, wait = lease.bound.admit(min(granted, want), need, now)
        if wait:
            return wait  # the database granted what the policy does not allow (counted and logged)
        lease.left += kept - count
        return 0.0


def _rate(per_second: float) -> str:
    """A rate as people read it: per second, or per hour when slower than one a second (erasure)."""
    if per_second >= 1:
        return f"{per_second:g} values/s"
    return f"{per_second * 3600:.3g} values/hour"
