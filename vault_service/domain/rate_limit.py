"""Per-client token buckets: how many values a client may have tokenized or revealed per second.

A bucket holds up to `burst` items and refills at `per_second`; a call takes as many items as
it carries tokens. A call that does not fit is refused whole (nothing is taken). Buckets are
kept in the process's memory, or, given a `SharedBuckets` (erasure), in one place that every
replica shares and that outlives a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from vault_service.domain.errors import RateLimited


@dataclass(frozen=True)
class RateLimit:
    """Sustained items per second and the largest burst."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")


class _Bucket:
    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.level = float(limit.burst)
        self.updated = now

    def take(self, count: int, now: float) -> float:
        """0 when `count` items were taken, else the seconds until they would fit."""
        self.level = min(self.limit.burst, self.level + (now - self.updated) * self.limit.per_second)
        self.updated = now
        if count <= self.level:
            self.level -= count
            return 0.0
        return (count - self.level) / self.limit.per_second


class SharedBuckets(Protocol):
    """Buckets kept outside the process (the database), shared by every replica."""

    def take(self, client: str, count: int, limit: RateLimit) -> float | None:
        """Take `count` items from the client's bucket: 0 when taken, else the seconds until they would fit.

        None when there are no shared buckets (yet): the limiter then keeps one in memory.
        """
        ...


class RateLimiter:
    """Token buckets by client name.

    A client without a limit of its own gets `default`: limits fail closed, never open.
    With `shared`, the buckets are kept there instead of in this process (in memory only while
    `shared` has none).
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        default: RateLimit,
        what: str = "detokenize",
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBuckets | None = None,
    ) -> None:
        self._limits = dict(limits)
        self._default = default
        self._what = what
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._shared = shared

    def take(self, client: str, count: int) -> None:
        """Take `count` items from the client's bucket; RateLimited when they do not fit."""
        limit = self._limits.get(client, self._default)
        if count > limit.burst:
            raise RateLimited(
                f"{count} values in one call exceed the {self._what} burst limit of {limit.burst}"
                f" for client {client!r}; split the call",
                retry_after=count / limit.per_second,
            )
        wait = self._shared.take(client, count, limit) if self._shared is not None else None
        if wait is None:
            with self._lock:
                now = self._clock()
                bucket = self._buckets.setdefault(client, _Bucket(limit, now))
                wait = bucket.take(count, now)
        if wait:
            raise RateLimited(
                f"client {client!r} may {self._what} {_rate(limit.per_second)} (burst {limit.burst});"
                f" retry in {wait:.2f} s",
                retry_after=wait,
            )


def _rate(per_second: float) -> str:
    """A rate as people read it: per second, or per hour when slower than one a second (erasure)."""
    if per_second >= 1:
        return f"{per_second:g} values/s"
    return f"{per_second * 3600:.3g} values/hour"
