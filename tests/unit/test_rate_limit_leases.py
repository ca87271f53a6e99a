"""Rate limits kept in a shared store, spent by each process from leases (MED-1, migration 0019).

The store here is the fake of vault.call_budget (tests/unit/fakes.py); the integration test
tests/integration/test_reveal_limit_replicas.py runs the same against PostgreSQL and real vaults.
"""

from __future__ import annotations

import random

import pytest

from tests.unit.fakes import FakeTokenStore
from vault_service.domain.errors import RateLimited, StorageError
from vault_service.domain.rate_limit import RECHECK_SHARED_SECONDS, RateLimit, RateLimiter, exact, lease_size

ANALYST = RateLimit(per_second=200, burst=2000)  # config/vault-policy.toml


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock) -> FakeTokenStore:
    store = FakeTokenStore()
    store.clock = clock
    return store


def _replica(store: FakeTokenStore, clock: Clock, limit: RateLimit = ANALYST, **options: object) -> RateLimiter:
    return RateLimiter({"analyst": limit}, RateLimit(1, 1), "detokenize", clock, store, "detokenize", **options)  # type: ignore[arg-type]


def _allowed(limiter: RateLimiter, count: int, times: int = 1) -> int:
    """Items let through in `times` calls of `count` items."""
    through = 0
    for _ in range(times):
        try:
            limiter.take("analyst", count)
            through += count
        except RateLimited:
            pass
    return through


def test_single_token_calls_go_to_the_store_once_per_lease() -> None:
    clock = Clock()
    store = _store(clock)
    limiter = _replica(store, clock)
    assert lease_size(ANALYST.burst) == 100
    assert _allowed(limiter, 1, 1000) == 1000
    assert store.budget_takes == 10  # one round trip per 100 reveals, not one per reveal


def test_replicas_and_restarts_share_one_burst() -> None:
    clock = Clock()  # frozen: no refill, so the budget is exactly the burst
    store = _store(clock)
    first, second = _replica(store, clock), _replica(store, clock)
    through = _allowed(first, 1000, 3) + _allowed(second, 1000, 3)
    restarted = _replica(store, clock)  # a process that starts has no lease, and the store no refill
    through += _allowed(restarted, 1000, 3) + _allowed(restarted, 1, 50)
    assert through == ANALYST.burst


def test_leases_bound_what_all_replicas_let_through_by_burst_plus_rate() -> None:
    # Since the budget started, whatever is spent was taken from it first: at most burst + rate * t.
    clock = Clock()
    store = _store(clock)
    replicas = [_replica(store, clock) for _ in range(12)]
    started, through = clock.now, 0
    chosen = random.Random(18)
    for _ in range(20000):
        clock.now += chosen.random() * 0.002
        through += _allowed(chosen.choice(replicas), chosen.choice((1, 1, 1, 7, 150)))
    elapsed = clock.now - started
    assert through <= ANALYST.burst + ANALYST.per_second * elapsed
    assert through >= ANALYST.per_second * elapsed * 0.8  # and the clients still get their rate


def test_a_refusal_takes_nothing_keeps_the_lease_and_says_how_long_to_wait() -> None:
    clock = Clock()
    store = _store(clock)
    limiter = _replica(store, clock, RateLimit(per_second=1, burst=200))  # leases of 10
    assert _allowed(limiter, 1) == 1  # 9 left in the lease, 190 in the store
    assert _allowed(limiter, 190) == 190  # needed 181 of the store: 9 left there
    with pytest.raises(RateLimited, match=r"retry in 11\.00 s") as refused:
        limiter.take("analyst", 20)  # needs 20 beyond the 0 left in the lease: 11 short
    assert refused.value.retry_after == pytest.approx(11)
    assert _allowed(limiter, 9) == 9  # the store kept its 9
    assert _allowed(limiter, 1) == 0


def test_erasure_takes_exactly_what_each_call_needs() -> None:
    clock = Clock()
    store = _store(clock)
    limiter = RateLimiter({}, RateLimit(0.005, 100), "erase", clock, store, "erase", lease=exact)
    limiter.take("officer", 3)
    assert store.buckets[("officer", "erase")][0] == 97  # no lease held back from another replica


@pytest.mark.parametrize("shared", [True, False])
def test_an_erasure_that_erased_nothing_gives_its_budget_back_to_the_store_and_to_the_process_bound(
    shared: bool,
) -> None:
    """Chaos 50, V50-4: the retry of an erasure the database refused was refused for the limit for hours."""
    clock = Clock()
    store = _store(clock)
    store.has_budgets = shared
    limiter = RateLimiter({}, RateLimit(0.005, 100), "erase", clock, store, "erase", lease=exact)
    limiter.take("officer", 100)
    with pytest.raises(RateLimited):
        limiter.take("officer", 1)
    limiter.give_back("officer", 100)  # nothing was erased
    limiter.take("officer", 100)  # the retry: neither the store nor this process's own bound refuses it
    with pytest.raises(RateLimited):
        limiter.take("officer", 1)  # and it was given back once, not more


@pytest.mark.parametrize("store_gives_back", ["not at all (no 0074)", "with an error"])
def test_a_give_back_the_shared_budget_did_not_take_leaves_the_process_bound_spent(store_gives_back: str) -> None:
    """Review 51, R51-6: this process's own bound (and its bucket in memory) was credited though the store was not."""
    clock = Clock()
    store = _store(clock)
    limiter = RateLimiter({}, RateLimit(0.005, 100), "erase", clock, store, "erase", lease=exact)
    limiter.take("officer", 100)
    if store_gives_back == "with an error":
        store.fails["give_back_budget"] = StorageError("the budget row is held")
        with pytest.raises(StorageError):
            limiter.give_back("officer", 100)
    else:
        store.gives_back = False
        limiter.give_back("officer", 100)
    store.buckets[("officer", "erase")] = (100.0, clock.now)  # a lying database grants 100 again (attack 22, F6)
    with pytest.raises(RateLimited):
        limiter.take("officer", 100)  # this process's bound still counts them spent


def test_a_call_larger_than_the_burst_is_refused_without_asking_the_store() -> None:
    clock = Clock()
    store = _store(clock)
    with pytest.raises(RateLimited, match="exceed the detokenize burst limit of 2000 for client 'analyst'; split"):
        _replica(store, clock).take("analyst", 2001)
    assert store.budget_takes == 0


class _UnreachableStore(FakeTokenStore):
    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        raise StorageError("database unreachable")


def test_a_store_that_fails_refuses_the_call() -> None:
    clock = Clock()
    with pytest.raises(StorageError):
        _replica(_UnreachableStore(), clock).take("analyst", 1)  # fails closed: no budget, no reveal


def test_without_shared_budgets_limits_hold_per_process_and_the_store_is_asked_again_later() -> None:
    # A service started before migration 0019 ran: limits hold in memory, as before it, and the
    # hot path does not knock at the database on every call to find the function still missing.
    clock = Clock()
    store = _store(clock)
    store.has_budgets = False
    limiter = _replica(store, clock, RateLimit(per_second=1, burst=5))
    assert _allowed(limiter, 1, 10) == 5
    assert store.budget_takes == 1
    store.has_budgets = True  # the migration ran
    clock.now += RECHECK_SHARED_SECONDS
    assert _allowed(limiter, 5) == 5
    assert store.budget_takes == 2 and store.buckets[("analyst", "detokenize")][0] == 0


class _OwnersBudget(FakeTokenStore):
    """vault.take_call_budget as its owner swapped it (attack 20, finding 4): no grant, a wait of 10^7 s, or
    a grant far over what was asked."""

    def __init__(self, answer: tuple[int, float]) -> None:
        super().__init__()
        self.answer = answer
        self.asked = 0

    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        self.asked += 1
        return self.answer


def test_a_wait_longer_than_the_limit_can_mean_is_cut_to_refilling_the_need() -> None:
    # Before, the 10^7 s went out as the client's retry-after-ms, and the ETL paused receiving that long.
    with pytest.raises(RateLimited) as refused:
        _replica(_OwnersBudget((0, 1.0e7)), Clock()).take("analyst", 50)
    assert refused.value.retry_after == pytest.approx(50 / ANALYST.per_second)


def test_a_grant_larger_than_asked_is_spent_as_the_lease_asked_for() -> None:
    # The process goes back to the store after one lease, as with an honest grant (the owner's function
    # decides every grant anyway; a grant of 10^9 kept it away from the store, and its limits, for good).
    store = _OwnersBudget((10**9, 0.0))
    limiter = _replica(store, Clock())
    _allowed(limiter, 1, 10 * lease_size(ANALYST.burst))
    assert store.asked == 10
