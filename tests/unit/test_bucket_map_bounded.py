"""In-memory token buckets hold no bucket for good, and dropping one never gives its key a fresh burst (attack 40).

A40-1: the refusal throttle kept one bucket (and one lease) per key it ever saw - 524 bytes per minted
certificate, never freed. A bucket that has refilled to its burst is dropped now: one made anew is the
same, so nothing an attacker does to make the map sweep resets its own bucket.
A40-2: the key commands' budgets were per certificate only; a client's certificates together now get
CLIENT_CERTIFICATES times one's.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from vault_service.domain.errors import RateLimited
from vault_service.domain.rate_limit import CLIENT_CERTIFICATES, BucketMap, CertificateBuckets, RateLimit, RateLimiter
from vault_service.service.metering import REFUSALS_AUDITED_PER_PEER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_throttle_seeing_a_new_peer_every_millisecond_holds_no_bucket_for_good() -> None:
    """As RefusalAuditor builds its limiter: 50,000 peers, one refused call each, a millisecond apart (the
    ETL minted a certificate every 3-4 ms). Before: every one kept (~25 MB); now those refilled are dropped."""
    clock = Clock()
    limiter = RateLimiter({}, REFUSALS_AUDITED_PER_PEER, what="have refused calls audited at", clock=clock)
    gc.collect()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for peer in range(50_000):
            limiter.take(f"{peer:064x}", 1)  # a certificate's SHA-256, as the peer key was
            clock.now += 0.001
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"held {(held - start) / 1024:.0f} KiB after 50,000 peers")
    assert held - start < 2 * 1024 * 1024, held - start


def test_a_sweep_never_gives_a_key_a_fresh_burst() -> None:
    """A key whose bucket is not full stays through any sweep other keys cause: still refused, refilling at its rate."""
    clock = Clock()
    buckets = BucketMap({}, RateLimit(per_second=5, burst=50), clock)
    for _ in range(50):
        assert buckets.take("client etl-service") == 0
    wait = buckets.take("client etl-service")
    assert wait == pytest.approx(0.2)
    for other in range(5 * BucketMap.SWEEP_AT):  # many keys, each full again a second later: sweeps run
        buckets.take(f"ipv4:10.0.{other // 256}.{other % 256}")
        clock.now += 0.001
    assert len(buckets) < 3 * BucketMap.SWEEP_AT  # the others were dropped once full again
    served = sum(1 for _ in range(60) if buckets.take("client etl-service") == 0)
    assert served == int(5 * 5 * BucketMap.SWEEP_AT * 0.001)  # what 5.12 s refilled at 5/s, not a new burst of 50
    clock.now += 11  # refilled: dropped at the next sweep, and made anew full, which is the same
    for other in range(2 * BucketMap.SWEEP_AT):
        buckets.take(f"ipv6:[fd00::{other:x}]")
    assert sum(1 for _ in range(60) if buckets.take("client etl-service") == 0) == 50


def test_a_bucket_given_back_after_it_was_dropped_stays_at_its_burst() -> None:
    clock = Clock()
    buckets = BucketMap({}, RateLimit(per_second=1, burst=2), clock)
    assert buckets.take("security-team", "1f") == 0
    clock.now += 5
    for other in range(BucketMap.SWEEP_AT + 1):
        buckets.take("security-team", f"{other:x}")
    buckets.give_back("security-team", "1f")  # dropped (full): nothing to put back, no level above the burst
    assert [buckets.take("security-team", "1f") == 0 for _ in range(3)] == [True, True, False]


def test_a_clients_certificates_together_get_a_bounded_multiple_of_one_certificates_budget() -> None:
    """A40-2: 5 self-signed certificates of the team answered 151 status calls at once; R33-4: a copy of one
    certificate still spends only that certificate's budget, the team's other certificates theirs."""
    clock = Clock()
    buckets = CertificateBuckets({"security-team": RateLimit(1, 30)}, RateLimit(1, 1), clock=clock)
    served = [sum(1 for _ in range(40) if not buckets.take("security-team", f"{n:x}").seconds) for n in range(6)]
    assert served == [30] * CLIENT_CERTIFICATES + [0] * (6 - CLIENT_CERTIFICATES)
    over = buckets.take("security-team", "ff")
    assert over.whole_client and over.seconds == pytest.approx(1 / (CLIENT_CERTIFICATES * 1))
    assert buckets.client_limit("security-team") == RateLimit(CLIENT_CERTIFICATES, 30 * CLIENT_CERTIFICATES)
    stale = buckets.take("security-team", "0")  # a certificate over its own budget: refused as that certificate
    assert stale.seconds == pytest.approx(1.0) and not stale.whole_client
    buckets.give_back("security-team", "1")  # one given back goes back to the certificate and the client
    assert buckets.take("security-team", "1").seconds == 0
    assert buckets.take("other-client", "1").seconds == 0 and buckets.take("other-client", "2").seconds == 0
    assert buckets.take("other-client", "3").seconds == 0  # the default (1 at once) x CLIENT_CERTIFICATES
    assert buckets.take("other-client", "4").whole_client


def test_a_limiter_in_memory_only_still_refuses_over_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter({}, RateLimit(per_second=5, burst=2), what="have refused calls audited at", clock=clock)
    limiter.take("client analyst", 1)
    limiter.take("client analyst", 1)
    with pytest.raises(RateLimited) as over:
        limiter.take("client analyst", 1)
    assert over.value.retry_after == pytest.approx(0.2)
