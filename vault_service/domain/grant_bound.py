"""A vault process's own bound on what the shared budget grants it: the policy's rate, whatever the database says.

The shared budgets (`vault.call_budget`, taken by `vault.take_call_budget`, migration 0019) live
in the database, and its owner can replace the function with one that grants whatever is asked:
an analyst's reveals went from 2,000 in 4 s (200/s, burst 2,000) to 144,000, nothing refused,
nothing alerted (attack 22, F6). The limit must not depend only on the party it bounds, so each
grant is also taken from a bucket of this process's own, per client and kind, at the policy's
rate and burst.

An honest grant always fits: the shared bucket refills at the same rate up to the same burst and
pays for every replica's grants, this process's being only some of them, so this process's
bucket holds at least what the shared one does - up to the difference in how long the database's
answers took to reach it (the shared bucket refills on the database's clock, this one on the
process's when the answer arrives); SLACK_SECONDS of the rate allow for that. A grant beyond it
means the shared budget answered more than the policy allows: its function or table was tampered
with (or replicas run different policies during a rollout, or the database's clock jumped
ahead). Only what fits is kept; when not even the call's need fits, the call is refused as over
the limit. Each such grant is counted per client and kind (`over_grants`, exported as
`tokenvault_budget_over_grants_total`) and logged at most once per LOG_INTERVAL_SECONDS per client
and kind. With a lying database a client is served at most burst + rate * (t + SLACK_SECONDS) in
t seconds by each replica.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vault_service.domain.rate_limit import RateLimit

log = logging.getLogger(__name__)

SLACK_SECONDS = 1.0
"""The policy's rate for this long on top of its burst: answers that reach the process later or sooner."""

LOG_INTERVAL_SECONDS = 60.0
"""At most one log line per client and kind this often (the count says how many grants it covers)."""

_counts: dict[tuple[str, str], int] = {}
_counts_lock = threading.Lock()


def expect_client(client: str, kind: str) -> None:
    """Show the client's count of `kind` as 0 until a grant goes over (an alert on its increase needs the 0)."""
    with _counts_lock:
        _counts.setdefault((client, kind), 0)


def over_grants() -> dict[tuple[str, str], int]:
    """(client, kind) -> grants of the shared budget beyond this process's bound, since the process started."""
    with _counts_lock:
        return dict(_counts)


def _count(client: str, kind: str) -> None:
    with _counts_lock:
        _counts[client, kind] = _counts.get((client, kind), 0) + 1


class GrantBound:
    """One client's bucket of one kind in this process, at the policy's rate: what the shared budget may grant.

    Not locked: used under the client's lease lock (rate_limit.RateLimiter).
    """

    __slots__ = ("_capacity", "_client", "_kind", "_level", "_limit", "_logged_at", "_unlogged", "_updated")

    def __init__(self, client: str, kind: str, limit: RateLimit, now: float) -> None:
        self._client = client
        self._kind = kind
        self._limit = limit
        self._capacity = limit.burst + limit.per_second * SLACK_SECONDS
        self._level = self._capacity
        self._updated = now
        self._logged_at = float("-inf")
        self._unlogged = 0

    def admit(self, granted: int, need: int, now: float) -> tuple[int, float]:
        """Of `granted` items (at least `need`) the shared budget gave: (items to keep, 0) or (0, seconds to wait).

        All of them when they fit this process's bucket; else as many as fit, when `need` does;
        else none, with the seconds until `need` would fit.
        """
        limit = self._limit
        level = min(self._capacity, self._level + max(0.0, now - self._updated) * limit.per_second)
        self._updated = max(self._updated, now)
        if granted <= level:
            self._level = level - granted
            return granted, 0.0
        self._over_granted(granted, level, now)
        if need <= level:
            kept = int(level)  # at least `need`, a whole number
            self._level = level - kept
            return kept, 0.0
        self._level = level
        return 0, (need - level) / limit.per_second

    def give_back(self, count: int) -> None:
        """Put back `count` items a call took and did not spend (an erasure that erased nothing: chaos 50, V50-4)."""
        self._level = min(self._capacity, self._level + count)

    def _over_granted(self, granted: int, level: float, now: float) -> None:
        _count(self._client, self._kind)
        self._unlogged += 1
        if now - self._logged_at < LOG_INTERVAL_SECONDS:
            return
        log.error(
            "the shared budget (vault.take_call_budget) granted client %r %d %s items where the policy (%g/s, burst"
            " %d) leaves this process %d: the database answered more than the policy allows - its budget function"
            " or table may have been tampered with (or replicas run different policies); only what the policy"
            " allows is served (%d such grant(s) for this client and kind since the last such line);"
            " tell the security team",
            self._client,
            granted,
            self._kind,
            self._limit.per_second,
            self._limit.burst,
            int(level),
            self._unlogged,
        )
        self._logged_at = now
        self._unlogged = 0
