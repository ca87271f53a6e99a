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
fresh burst). All refused certificates together are also bounded by REFUSED_CERTIFICATES_AUDITED. Names
are roles (every analyst's certificate says `analyst`), so one refused certificate in a loop kept every other
of its name out of the audit (attack 46, A46-4): each bucket a refused certificate takes from keeps its last
FIRST_REFUSALS items for the first refusals of each certificate (serial), which the loop has spent. The
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

FIRST_REFUSALS = 5
"""Refusals of each refused certificate (serial) audited before the others of its name and of all refused
certificates: each of those buckets keeps this many items for them (attack 46, A46-4)."""
FIRST_REFUSALS_OF = "first refusals of a certificate"
"""The throttle's buckets of each refused certificate's first refusals, by serial (a key no peer has)."""
FIRST_REFUSALS_AGAIN = RateLimit(per_second=1 / 60, burst=FIRST_REFUSALS)
"""A certificate's first refusals come back one a minute: a bucket is held at most 5 minutes after its last use."""

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
        self._buckets = BucketMap(
            {REFUSED_CERTIFICATES: refused_certificates, FIRST_REFUSALS_OF: FIRST_REFUSALS_AGAIN}, limit, clock
        )
        self._lock = threading.Lock()
        self._suppressed: Counter[tuple[str, str, str]] = Counter()
        self._listed: dict[tuple[str, str, str], list[str]] = {}
        self._unlisted: set[tuple[str, str, str]] = set()

    def __len__(self) -> int:
        """Throttle buckets held now (the memory the throttle's keys take)."""
        return len(self._buckets)

    def refused(self, peer: str, event: AuditEvent, within: str = "") -> None:
        """Write `event` (a refusal by `peer`); TooManyRequests when the peer is over its rate.

        `within`: a bucket the peer's refusals share with others' (REFUSED_CERTIFICATES), taken from too:
        both or neither. A refusal with `within` naming a certificate (`event.client_serial`) leaves each
        bucket's last FIRST_REFUSALS items to the first refusals of certificates: one of its own first
        refusals may take them (`_first_refusal`).
        """
        serial = event.client_serial if within else ""
        keep = FIRST_REFUSALS if serial else 0
        wait = self._both(peer, within, keep)
        if wait and serial and self._first_refusal(peer, within, serial):
            wait = 0.0
        if wait:
            with self._lock:
                key = (event.client, event.action, _THROTTLED)
                self._suppressed[key] += 1
                self._list(key, [event.client_serial] if event.client_serial else [], False)
            raise TooManyRequests(f"too many refused calls from this client; retry in {wait:.1f} s", retry_after=wait)
        self._audit.append(event)

    def _both(self, peer: str, within: str, keep: int = 0) -> float:
        """Take one from `peer`'s bucket and `within`'s (if any), leaving `keep` in each: 0, or the seconds to wait."""
        wait = self._buckets.take(peer, keep=keep)
        if not wait and within:
            wait = self._buckets.take(within, keep=keep)
            if wait:
                self._buckets.give_back(peer)
        return wait

    def _first_refusal(self, peer: str, within: str, serial: str) -> bool:
        """Whether one of certificate `serial`'s first refusals was taken, with one from each bucket's reserve.

        All or none. A looping certificate has spent its own (one more a minute), so the reserve is left to
        the others: the holder of a revoked analyst certificate in a loop no longer keeps every other refused
        analyst certificate out of the audit (attack 46, A46-4: 20 calls of another, none audited). Every row
        still takes from the name's bucket and all refused certificates' (the bounds of attack 45, A45-5, and
        attack 40, A40-1, unchanged). The certificate's bucket is looked up only once those granted: one is made
        at most per row written, held at most 5 minutes - the map stays bounded by the rows' rate.
        """
        if self._both(peer, within):
            return False
        if self._buckets.take(FIRST_REFUSALS_OF, serial):
            self._buckets.give_back(peer)
            self._buckets.give_back(within)
            return False
        return True

    def _list(self, key: tuple[str, str, str], serials: list[str], unlisted: bool) -> None:
        """Name `serials` in `key`'s counted row, up to THROTTLED_SERIALS_LISTED of them; called with the lock held."""
        if not serials and not unlisted:
            return
        listed = self._listed.setdefault(key, [])
        for serial in serials:
            if serial in listed:
                continue
            if len(listed) < THROTTLED_SERIALS_LISTED:
                listed.append(serial)
            else:
                unlisted = True
        if unlisted:
            self._unlisted.add(key)

    def _take_counts(self) -> list[tuple[tuple[str, str, str], int, list[str], bool]]:
        """What was counted since the last flush, with the certificates it names; the counts reset."""
        with self._lock:
            suppressed, self._suppressed = self._suppressed, Counter()
            listed, self._listed = self._listed, {}
            unlisted, self._unlisted = self._unlisted, set()
        return [(key, count, listed.get(key, []), key in unlisted) for key, count in suppressed.items()]

    def counted(self, client: str, action: str, reason: str) -> None:
        """Count a refusal of `client`'s `action` for `reason`, to be written with others like it at the next flush."""
        with self._lock:
            self._suppressed[(client, action, reason)] += 1

    def flush(self) -> list[AuditEvent]:
        """One event per (client, action, reason) whose refusals were counted instead of written."""
        return [_counted_event(*pending) for pending in self._take_counts()]

    def flush_into(self, append: Callable[[AuditEvent], object]) -> None:
        """Write the events `flush` would return through `append`; if one fails, it and the rest stay counted."""
        pending = self._take_counts()

        def count_again(unwritten: int) -> None:
            with self._lock:
                for key, count, serials, unlisted in pending[unwritten:]:
                    self._suppressed[key] += count
                    self._list(key, serials, unlisted)

        _write_all([_counted_event(*counts) for counts in pending], append, count_again)


_THROTTLED = "more refusals, throttled"

THROTTLED_SERIALS_LISTED = 16
"""Certificates (serials) a row of throttled refusals names at most: who else was refused is in the audit too,
not only the certificate that kept the bucket empty (attack 46, A46-4); the row stays small (about 700 bytes)."""


def _counted_event(key: tuple[str, str, str], count: int, serials: list[str], unlisted: bool) -> AuditEvent:
    client, action, reason = key
    named = f"; certificates (serial): {', '.join(serials)}{', and others' if unlisted else ''}" if serials else ""
    return AuditEvent(client, action, f"refused: {count} {reason}{named}", count)


def _write_all(events: list[AuditEvent], append: Callable[[AuditEvent], object], keep: Callable[[int], None]) -> None:
    """Append `events` in order; when one fails, `keep(its index)` puts it and the rest back, and the error goes on."""
    for done, event in enumerate(events):
        try:
            append(event)
        except BaseException:
            keep(done)
            raise
