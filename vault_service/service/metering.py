"""Tokenize is metered and audited in aggregate; refusals are audited, and throttled per peer.

Tokenize is the ETL's hot path (tens of thousands of values a second), so it is not audited
per call: `TokenizeMeter` counts values and *new* tokens per client and `flush()` writes one
audit row per client and interval. A dictionary sweep shows there as a burst of new tokens
(and in the metric behind the shipped alerting rule); values refused new tokens for want of
new-token budget are counted in a metric beside it, which the rule adds (attack 23, F2).

Every refused call is audited with the caller's identity, but a peer sending refused calls in
a loop must not be able to fill the audit log: `RefusalAuditor` writes up to `burst` refusal
rows per peer and then `per_second`; beyond that the peer gets TooManyRequests and its
refusals are counted and written as one row per interval. A peer is a client by its name, never
by certificate (a client that issues itself certificates got a fresh burst with each: attack 40,
A40-1; the guard's `_peer_of`); a certificate the vault refuses itself (revoked, expired, not yet
valid) by the client name it carries, in a bucket apart from that client's own ("refused <name>"),
and every other refused certificate in one bucket - never by the peer's address, which the caller
chooses (attack 45, A45-5: any local process binds any 127.0.0.0/8 address, and each brought a
fresh burst). All refused certificates together are also bounded by REFUSED_CERTIFICATES_AUDITED. The
throttle keeps a bucket only while it is not full again (`BucketMap`). Calls refused for being over the
client's share of calls in progress come in floods by nature: they are always counted that
way (`counted`), so refusing one writes nothing while it happens.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import TooManyRequests
from vault_service.domain.identity import Caller
from vault_service.domain.rate_limit import BucketMap, RateLimit
from vault_service.service.ports import AuditLog

REFUSALS_AUDITED_PER_PEER = RateLimit(per_second=5, burst=50)

REFUSED_CERTIFICATES = "certificates refused"
"""The throttle's bucket of every certificate the vault refuses, whatever it names (a key no peer has: a name
has no space)."""
REFUSED_CERTIFICATES_AUDITED = RateLimit(per_second=10, burst=100)
"""All refused certificates together, within every peer's own bound: rare in normal operation (a person's
certificate just expired, a revoked one tried), so twice one peer's rate leaves room for two at once while
bounding what the holders of refused certificates of every name the policy knows can write together."""

NewTokensObserver = Callable[[str, int, int], None]
"""(client, values, new tokens) -> None: told of every tokenize call (for metrics)."""

RefusedNewTokensObserver = Callable[[str, int], None]
"""(client, values) -> None: told of values refused new tokens for want of new-token budget (for metrics)."""


class TokenizeMeter:
    """Values and new tokens per client since the last flush."""

    def __init__(
        self, observer: NewTokensObserver | None = None, on_refused_new: RefusedNewTokensObserver | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._values: Counter[Caller] = Counter()
        self._new: Counter[Caller] = Counter()
        self._observer = observer
        self._on_refused_new = on_refused_new

    def record(self, caller: Caller, values: int, new_tokens: int) -> None:
        """Count one tokenize call."""
        with self._lock:
            self._values[caller] += values
            self._new[caller] += new_tokens
        if self._observer is not None:
            self._observer(caller.name, values, new_tokens)

    def refused_new_tokens(self, caller: Caller, values: int) -> None:
        """Count `values` not stored that a call wanted new tokens for and the new-token limit refused.

        A sweep that keeps the client's new-token bucket empty learns "stored or not" from the
        refusals without minting (attack 23, F2): they are counted beside the new tokens, where
        the sweep alert looks. The audit row of each refusal already says how many.
        """
        if self._on_refused_new is not None:
            self._on_refused_new(caller.name, values)

    def flush(self) -> list[AuditEvent]:
        """One audit event per client with activity since the last flush; counters reset."""
        with self._lock:
            values, new, self._values, self._new = self._values, self._new, Counter(), Counter()
        return [_tokenize_event(caller, count, new[caller]) for caller, count in values.items()]

    def flush_into(self, append: Callable[[AuditEvent], object]) -> None:
        """Write the events `flush` would return through `append`; if one fails, it and the rest stay counted.

        The counts are the only record of an interval's tokenize calls: a failed audit append
        (the database away) must not lose them, so they go back and the next flush writes them.
        """
        with self._lock:
            values, new, self._values, self._new = self._values, self._new, Counter(), Counter()
        pending = list(values.items())

        def count_again(unwritten: int) -> None:
            with self._lock:
                for caller, count in pending[unwritten:]:
                    self._values[caller] += count
                    self._new[caller] += new[caller]

        _write_all([_tokenize_event(caller, count, new[caller]) for caller, count in pending], append, count_again)


def _tokenize_event(caller: Caller, values: int, new_tokens: int) -> AuditEvent:
    return AuditEvent(
        caller.name,
        "tokenize",
        f"ok: {values} values, {new_tokens} new tokens",
        values,
        client_serial=caller.serial,
        client_cert_sha256=caller.cert_sha256,
    )


class RefusalAuditor:
    """Audits refused calls, per peer up to a rate; beyond it, counts them and refuses the peer."""

    def __init__(
        self,
        audit: AuditLog,
        limit: RateLimit = REFUSALS_AUDITED_PER_PEER,
        refused_certificates: RateLimit = REFUSED_CERTIFICATES_AUDITED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._audit = audit
        self._buckets = BucketMap({REFUSED_CERTIFICATES: refused_certificates}, limit, clock)
        self._lock = threading.Lock()
        self._suppressed: Counter[tuple[str, str, str]] = Counter()

    def refused(self, peer: str, event: AuditEvent, within: str = "") -> None:
        """Write `event` (a refusal by `peer`); TooManyRequests when the peer is over its rate.

        `within`: a bucket the peer's refusals share with others' (REFUSED_CERTIFICATES), taken from too:
        both or neither.
        """
        wait = self._buckets.take(peer)
        if not wait and within:
            wait = self._buckets.take(within)
            if wait:
                self._buckets.give_back(peer)
        if wait:
            with self._lock:
                self._suppressed[(event.client, event.action, _THROTTLED)] += 1
            raise TooManyRequests(f"too many refused calls from this client; retry in {wait:.1f} s", retry_after=wait)
        self._audit.append(event)

    def counted(self, client: str, action: str, reason: str) -> None:
        """Count a refusal of `client`'s `action` for `reason`, to be written with others like it at the next flush."""
        with self._lock:
            self._suppressed[(client, action, reason)] += 1

    def flush(self) -> list[AuditEvent]:
        """One event per (client, action, reason) whose refusals were counted instead of written."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, Counter()
        return [_counted_event(*key, count) for key, count in suppressed.items()]

    def flush_into(self, append: Callable[[AuditEvent], object]) -> None:
        """Write the events `flush` would return through `append`; if one fails, it and the rest stay counted."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, Counter()
        pending = list(suppressed.items())

        def count_again(unwritten: int) -> None:
            with self._lock:
                for key, count in pending[unwritten:]:
                    self._suppressed[key] += count

        _write_all([_counted_event(*key, count) for key, count in pending], append, count_again)


_THROTTLED = "more refusals, throttled"


def _counted_event(client: str, action: str, reason: str, count: int) -> AuditEvent:
    return AuditEvent(client, action, f"refused: {count} {reason}", count)


def _write_all(events: list[AuditEvent], append: Callable[[AuditEvent], object], keep: Callable[[int], None]) -> None:
    """Append `events` in order; when one fails, `keep(its index)` puts it and the rest back, and the error goes on."""
    for done, event in enumerate(events):
        try:
            append(event)
        except BaseException:
            keep(done)
            raise
