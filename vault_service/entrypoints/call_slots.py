"""How many calls one client may have in progress at once (its share of the server's call slots).

gRPC's Python server runs every call on one pool of worker threads and refuses calls beyond
`maximum_concurrent_rpcs` with RESOURCE_EXHAUSTED before any Python code sees them, so before
the caller is known. Without a share per client, the ETL - within its quota - filled every
slot with large Tokenize calls and analysts' reveals were refused, unaudited (insider round 4,
LOW-1). `CallSlots` counts the calls each client identity (certificate common name: several
ETL processes share one) has in progress; a call beyond the client's share is refused at once,
before it takes a worker for its work, so the other workers stay free for other clients.
"""

from __future__ import annotations

import threading
from collections import Counter

from vault_service.domain.errors import TooManyCallsAtOnce

RETRY_AFTER_SECONDS = 0.1
"""What a refused caller is told to wait: about one large Tokenize call of its own."""


class CallSlots:
    """Calls in progress per client, at most `per_client` each."""

    def __init__(self, per_client: int) -> None:
        if per_client < 1:
            raise ValueError(f"a client needs at least one call slot, got {per_client}")
        self.per_client = per_client
        self._lock = threading.Lock()
        self._in_progress: Counter[str] = Counter()

    def take(self, client: str) -> None:
        """Take one of `client`'s slots (give it back with `release`); TooManyCallsAtOnce when none is free."""
        with self._lock:
            if self._in_progress[client] >= self.per_client:
                raise TooManyCallsAtOnce(
                    f"client {client!r} already has {self.per_client} calls in progress, the most one client may"
                    f" have at once on this vault process (TOKENVAULT_MAX_CALLS_PER_CLIENT); retry after"
                    f" {RETRY_AFTER_SECONDS:g} s (retry-after-ms), or make fewer calls at once",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            self._in_progress[client] += 1

    def release(self, client: str) -> None:
        """Give back a slot `take` gave `client`."""
        with self._lock:
            self._in_progress[client] -= 1
            if self._in_progress[client] <= 0:
                del self._in_progress[client]

    def in_progress(self, client: str) -> int:
        """Calls `client` has in progress now."""
        with self._lock:
            return self._in_progress[client]
