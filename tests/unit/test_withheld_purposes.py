"""The in-memory record of withheld purposes: per client, bounded, expiring (attack 15, finding 4)."""

from __future__ import annotations

from vault_service.domain.policy import DEFAULT_LIMITS, AccessPolicy, ClientPermissions, Limits
from vault_service.domain.rate_limit import RateLimit
from vault_service.service.withheld_purposes import (
    MAX_REMEMBERED_SECONDS,
    MIN_REMEMBERED_SECONDS,
    WithheldPurposes,
    remembered_for,
)


def _erase_limit(erase: RateLimit) -> Limits:
    return Limits(DEFAULT_LIMITS.tokenize, DEFAULT_LIMITS.new_tokens, DEFAULT_LIMITS.detokenize, erase)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_remembered_purpose_is_withheld_for_its_client_only() -> None:
    withheld = WithheldPurposes()
    assert not withheld.withheld_before("privacy-officer", "GDPR-2026-801-X")
    withheld.remember("privacy-officer", "GDPR-2026-801-X")
    assert withheld.withheld_before("privacy-officer", "GDPR-2026-801-X")
    assert not withheld.withheld_before("analyst", "GDPR-2026-801-X")
    assert not withheld.withheld_before("privacy-officer", "GDPR-2026-801-Y")


def test_an_entry_expires_after_the_ttl_and_a_hit_renews_it() -> None:
    clock = _Clock()
    withheld = WithheldPurposes(ttl=100.0, clock=clock)
    withheld.remember("c", "P-1")
    clock.now = 90.0
    assert withheld.withheld_before("c", "P-1")  # renewed at 90
    clock.now = 180.0
    assert withheld.withheld_before("c", "P-1")
    clock.now = 280.0
    assert not withheld.withheld_before("c", "P-1")
    assert len(withheld) == 0


def test_the_least_recently_used_goes_first_beyond_the_bound() -> None:
    withheld = WithheldPurposes(capacity_per_client=3)
    for n in range(3):
        withheld.remember("c", f"P-{n}")
    assert withheld.withheld_before("c", "P-0")  # used: now the most recent
    withheld.remember("c", "P-3")
    assert len(withheld) == 3
    assert not withheld.withheld_before("c", "P-1")
    assert all(withheld.withheld_before("c", p) for p in ("P-0", "P-2", "P-3"))


def test_one_clients_purposes_never_evict_another_clients_entry() -> None:
    # Review 16, finding 7: one bound shared by all clients let a client whose own purposes are
    # withheld push the officer's entry out with enough distinct purposes.
    withheld = WithheldPurposes(capacity_per_client=3)
    withheld.remember("privacy-officer", "GDPR-2026-801-X")
    for n in range(50):
        withheld.remember("analyst", f"INC-{n}")
    assert withheld.withheld_before("privacy-officer", "GDPR-2026-801-X")
    assert len(withheld) == 4  # the officer's one and the analyst's last three


def test_no_purpose_is_kept_in_clear() -> None:
    withheld = WithheldPurposes()
    withheld.remember("privacy-officer", "GDPR-2026-801-SM-G991B-ATKQZXWV")
    assert withheld.digests()
    assert all(b"SM-G991B" not in key for key in withheld.digests())


def test_the_ttl_covers_twice_the_longest_erase_refill_within_bounds() -> None:
    default = AccessPolicy({})
    assert remembered_for(default) == MIN_REMEMBERED_SECONDS  # 100 at 0.005/s: 5.6 h, twice is 11.1 h
    policy = AccessPolicy({"privacy-officer": ClientPermissions(limits=_erase_limit(RateLimit(0.001, 100)))})
    assert remembered_for(policy) == 200_000.0  # 100,000 s to refill, twice
    slowest = _erase_limit(RateLimit(1e-6, 100))
    assert remembered_for(AccessPolicy({"o": ClientPermissions(limits=slowest)})) == MAX_REMEMBERED_SECONDS
