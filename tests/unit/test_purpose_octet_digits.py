"""A purpose spells an ip whose dotted form's digits it writes regrouped (attack 16, finding 3).

`198.18.174.30` as `REQ-1981-8174-30` or `REQ-19818-17430` passed the shape check and was read as
no address: kept verbatim on a plain reveal of that very ip. The digits of the purpose joined
across its separators are now split into four octets every way, and compared with the call's own
values only (never looked up among the stored ones).
"""

from __future__ import annotations

import itertools
import random

import pytest

from vault_service.domain.purpose import unfit_purpose, values_spelled_by
from vault_service.domain.purpose_numbers import _ipv4_octet_digits

REGROUPED = {
    "198.18.174.30": ["REQ-1981-8174-30", "REQ-19818-17430", "REQ-1-9818174-30", "INC-X1981817430y"],
    "203.0.113.7": ["REQ-203-0113-7", "REQ-2030-1137", "REQ-20301-137", "REQ-2030113-7"],
}
_CASES = [pytest.param(ip, purpose, id=purpose) for ip, purposes in REGROUPED.items() for purpose in purposes]


@pytest.mark.parametrize(("ip", "purpose"), _CASES)
def test_an_ips_dotted_digits_regrouped_are_spelled(ip: str, purpose: str) -> None:
    if not purpose.startswith("INC-X"):
        assert unfit_purpose(purpose) is None  # only the comparison with the call's own values finds it
    assert ip in values_spelled_by.__wrapped__(purpose)


def _every_split(digits: str) -> set[str]:
    """Each address whose dotted digits stand in `digits`, by trying every window and every three cuts."""
    found = set()
    for start, end in itertools.combinations(range(len(digits) + 1), 2):
        window = digits[start:end]
        for a, b, c in itertools.combinations(range(1, len(window)), 3):
            octets = [window[:a], window[a:b], window[b:c], window[c:]]
            canonical = all(len(o) <= 3 and (o == "0" or o[0] != "0") and int(o) <= 255 for o in octets)
            if canonical and octets[0] != "0":
                found.add(".".join(octets))
    return found


def test_the_splits_are_every_address_whose_digits_stand_in_the_run() -> None:
    chooser = random.Random(16)
    for _ in range(200):
        digits = "".join(chooser.choice("0012559") for _ in range(chooser.randint(1, 24)))
        assert _ipv4_octet_digits({digits}) == _every_split(digits), digits


def test_no_address_below_one_and_none_from_three_digits() -> None:
    assert _ipv4_octet_digits({"123"}) == set()
    assert _ipv4_octet_digits({"0123"}) == set()
    assert _ipv4_octet_digits({"1234"}) == {"1.2.3.4"}


def test_a_run_longer_than_any_purpose_is_not_split() -> None:
    assert "198.18.174.30" not in _ipv4_octet_digits({"1981817430" * 7})
    assert "198.18.174.30" in _ipv4_octet_digits({("1981817430" * 7)[:64]})
