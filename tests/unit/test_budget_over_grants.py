"""The process's own bound on what the shared budget grants (attack 22, F6: the owner's function granting everything).

The database owner can replace vault.take_call_budget with one that grants every lease asked
for; each replica then still serves a client at most the policy's burst + rate * (t + slack),
counts and logs the over-grants. An honest budget is never refused by the bound, also when the
database's answers reach the process after delays that differ. The integration test
tests/integration/test_reveal_limit_replicas.py replaces the function in PostgreSQL.
"""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.unit.fakes import FakeTokenStore
from vault_service.domain import grant_bound
from vault_service.domain.errors import RateLimited
from vault_service.domain.grant_bound import LOG_INTERVAL_SECONDS, SLACK_SECONDS, GrantBound, over_grants
from vault_service.domain.rate_limit import RateLimit, RateLimiter, exact
from vault_service.entrypoints.metrics import _VaultCollector
from vault_service.service.token_cache import TokenCache

ANALYST = RateLimit(per_second=200, burst=2000)  # config/vault-policy.toml


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grant_bound, "_counts", {})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _GrantsWhatIsAsked(FakeTokenStore):
    """vault.take_call_budget as the owner replaced it: `want`, wait 0, always (attack 22, F6)."""

    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        return want, 0.0


def _limiter(store: FakeTokenStore, clock: Any, limit: RateLimit = ANALYST, kind: str = "detokenize") -> RateLimiter:
    return RateLimiter({"analyst": limit}, RateLimit(1, 1), kind, clock, store, kind)


def _served(limiter: RateLimiter, clock: Clock, count: int, seconds: float, step: float) -> tuple[int, int]:
    """(items served, calls refused) for calls of `count` items every `step` seconds during `seconds`."""
    served = refused = 0
    stop = clock.now + seconds
    while clock.now < stop:
        try:
            limiter.take("analyst", count)
            served += count
        except RateLimited:
            refused += 1
        clock.now += step
    return served, refused


def test_a_budget_granting_every_lease_serves_a_client_no_more_than_the_policy_in_each_process() -> None:
    # The attack's figures: 1,000-token reveals for 4 s; before, every one was served (144,000 in 4 s).
    clock = Clock()
    limiter = _limiter(_GrantsWhatIsAsked(), clock)
    served, refused = _served(limiter, clock, 1000, 6.0, 0.01)
    assert served <= ANALYST.burst + ANALYST.per_second * (6.0 + SLACK_SECONDS)
    assert served >= ANALYST.burst + ANALYST.per_second * 6.0 - 1000  # the policy's rate is still served
    assert refused > 300
    assert over_grants()[("analyst", "detokenize")] >= refused


def test_single_item_calls_get_the_policy_rate_from_a_lying_budget() -> None:
    clock = Clock()
    limiter = _limiter(_GrantsWhatIsAsked(), clock)
    served, _ = _served(limiter, clock, 1, 10.0, 0.0005)  # 2,000 calls a second asked for
    assert ANALYST.burst + ANALYST.per_second * 10 * 0.9 <= served
    assert served <= ANALYST.burst + ANALYST.per_second * (10 + SLACK_SECONDS)


def test_an_over_grant_is_refused_as_over_the_limit_with_the_seconds_to_wait() -> None:
    clock = Clock()
    limiter = _limiter(_GrantsWhatIsAsked(), clock)
    limiter.take("analyst", 2000)
    limiter.take("analyst", 200)  # the slack: a second of the rate
    with pytest.raises(RateLimited, match=r"may detokenize 200 values/s \(burst 2000\); retry in 2\.50 s") as refused:
        limiter.take("analyst", 500)
    assert refused.value.retry_after == pytest.approx(2.5)
    clock.now += 2.5
    limiter.take("analyst", 500)  # served once the policy's rate allows it


def test_erasure_from_a_lying_budget_stays_at_its_slow_rate() -> None:
    # Erasure takes exactly what each call needs (no lease): 100 at once, then 18 an hour.
    clock = Clock()
    erase = RateLimit(0.005, 100)
    limiter = RateLimiter({}, erase, "erase", clock, _GrantsWhatIsAsked(), "erase", lease=exact)
    served, _ = _served(limiter, clock, 10, 3600.0, 1.0)
    assert served <= 100 + 0.005 * (3600 + SLACK_SECONDS)


class _Replica:
    """A process whose clock reads the database's answers `delay` seconds after the database read its own."""

    def __init__(self, truth: Clock, store: FakeTokenStore) -> None:
        self.truth = truth
        self.delay = 0.0
        self.limiter = _limiter(store, self)

    def __call__(self) -> float:
        return self.truth.now + self.delay

    def take(self, count: int, delay: float) -> bool:
        """Whether `count` items were served, the answer `delay` late (the caller waits for it)."""
        self.delay = delay
        try:
            self.limiter.take("analyst", count)
            return True
        except RateLimited:
            return False
        finally:
            self.truth.now += delay


def test_an_honest_budget_is_never_refused_by_the_bound_whatever_the_delays_of_its_answers() -> None:
    # The tightest case for a process's own bucket: it serves nearly all of a client's rate, and the
    # first grant after an idle spell (both buckets full) reached it late - a pause, a slow network -
    # while later ones are quick: its bucket then refills for less time than the database's did. A
    # few calls go to other replicas. Without SLACK_SECONDS this counts over-grants (seed 22: 9).
    truth = Clock()
    store = FakeTokenStore()
    store.clock = truth
    busy, *others = [_Replica(truth, store) for _ in range(4)]
    chosen = random.Random(22)
    served = 0
    for _ in range(20):
        truth.now += 15.0  # idle: every bucket full again
        busy.take(1, delay=0.9)  # the first grant's answer late
        for _ in range(2000):
            truth.now += chosen.random() * 0.004
            replica = busy if chosen.random() < 0.95 else chosen.choice(others)
            delay = 0.9 if chosen.random() < 0.02 else 0.001
            served += replica.take(chosen.choice((1, 1, 7, 150, 600)), delay)
    assert over_grants() == {("analyst", "detokenize"): 0}
    assert 0 < served < 20 * 2000  # calls served: the client did meet its limit, refused by the database


def test_an_over_grant_keeps_what_fits_and_is_logged_once_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    bound = GrantBound("analyst", "detokenize", RateLimit(10, 100), now=0.0)
    assert bound.admit(100, 1, 0.0) == (100, 0.0)  # the burst
    caplog.set_level(logging.ERROR, grant_bound.__name__)
    assert bound.admit(100, 1, 0.5) == (15, 0.0)  # 10 of slack and 5 refilled: kept, the rest not served
    kept, wait = bound.admit(100, 20, 1.0)
    assert kept == 0 and wait == pytest.approx(1.5)  # 5 held, 20 needed
    assert bound.admit(100, 1, LOG_INTERVAL_SECONDS) == (100, 0.0)  # refilled: an honest-sized grant
    bound.admit(1000, 1, LOG_INTERVAL_SECONDS + 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "granted client 'analyst' 100 detokenize items where the policy (10/s, burst 100)" in lines[0]
    assert "tampered" in lines[0] and "(1 such grant(s)" in lines[0]
    assert "(2 such grant(s)" in lines[1]
    assert over_grants() == {("analyst", "detokenize"): 3}


def test_over_grants_are_exported_by_client_and_kind_from_zero() -> None:
    # An alert on the counter's increase needs the series at 0 before the first over-grant.
    clock = Clock()
    policy = {"analyst": ANALYST, "fraud-investigator": ANALYST}
    limiter = RateLimiter(policy, RateLimit(1, 1), "detokenize", clock, _GrantsWhatIsAsked(), "detokenize")
    limiter.take("analyst", 2000)
    limiter.take("analyst", 200)
    with pytest.raises(RateLimited):
        limiter.take("analyst", 2000)
    collector = _VaultCollector(TokenCache(10), cast(Any, SimpleNamespace(races=0, merged_batches=0)))
    family = next(f for f in collector.collect() if f.name == "tokenvault_budget_over_grants")
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("tokenvault_budget_over_grants_total", {"client": "analyst", "kind": "detokenize"}, 1),
        ("tokenvault_budget_over_grants_total", {"client": "fraud-investigator", "kind": "detokenize"}, 0),
    ]
