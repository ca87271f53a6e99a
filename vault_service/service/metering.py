"""Tokenize is metered and audited in aggregate; refusals are audited, and throttled per peer.

Tokenize is the ETL's hot path (tens of thousands of values a second), so it is not audited
per call: `TokenizeMeter` counts values and *new* tokens per client and `flush()` writes one
audit row per client and interval. A dictionary sweep shows there as a burst of new tokens
(and in the metric behind the shipped alerting rule).

Every refused call is audited with the caller's identity, but a peer sending refused calls in
a loop must not be able to fill the audit log: `RefusalAuditor` writes up to `burst` refusal
rows per peer and then `per_second`; beyond that the peer gets TooManyRequests and its
refusals are counted and written as one row per interval.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import RateLimited, TooManyRequests
from vault_service.domain.identity import Caller
from vault_service.domain.rate_limit import RateLimit, RateLimiter
from vault_service.service.ports import AuditLog

REFUSALS_AUDITED_PER_PEER = RateLimit(per_second=5, burst=50)

NewTokensObserver = Callable[[str, int, int], None]
"""(client, values, new tokens) -> None: told of every tokenize call (for metrics)."""


class TokenizeMeter:
    """Values and new tokens per client since the last flush."""

    def __init__(self, observer: NewTokensObserver | None = None) -> None:
        self._lock = threading.Lock()
        self._values: Counter[Caller] = Counter()
        self._new: Counter[Caller] = Counter()
        self._observer = observer

    def record(self, caller: Caller, values: int, new_tokens: int) -> None:
        """Count one tokenize call."""
        with self._lock:
            self._values[caller] += values
            self._new[caller] += new_tokens
        if self._observer is not None:
            self._observer(caller.name, values, new_tokens)

    def flush(self) -> list[AuditEvent]:
        """One audit event per client with activity since the last flush; counters reset."""
        with self._lock:
            values, new, self._values, self._new = self._values, self._new, Counter(), Counter()
        return [
            AuditEvent(
                caller.name,
                "tokenize",
                f"ok: {count} values, {new[caller]} new tokens",
                count,
                client_serial=caller.serial,
                client_cert_sha256=caller.cert_sha256,
            )
            for caller, count in values.items()
        ]


class RefusalAuditor:
    """Audits refused calls, per peer up to a rate; beyond it, counts them and refuses the peer."""

    def __init__(self, audit: AuditLog, limit: RateLimit = REFUSALS_AUDITED_PER_PEER) -> None:
        self._audit = audit
        self._limiter = RateLimiter({}, limit, what="have refused calls audited at")
        self._lock = threading.Lock()
        self._suppressed: Counter[tuple[str, str]] = Counter()

    def refused(self, peer: str, event: AuditEvent) -> None:
        """Write `event` (a refusal by `peer`); TooManyRequests when the peer is over its rate."""
        try:
            self._limiter.take(peer, 1)
        except RateLimited as over:
            with self._lock:
                self._suppressed[(event.client, event.action)] += 1
            raise TooManyRequests(
                f"too many refused calls from this client; retry in {over.retry_after:.1f} s",
                retry_after=over.retry_after,
            ) from None
        self._audit.append(event)

    def flush(self) -> list[AuditEvent]:
        """One event per (client, action) whose refusals were counted instead of written."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, Counter()
        return [
            AuditEvent(client, action, f"refused: {count} more refusals, throttled", count)
            for (client, action), count in suppressed.items()
        ]
