"""A purpose spells an ip written as hex octets or as two hex halves (attack 14, finding 5).

`INC-CB-00-71-07`, `INC-CB.00.71.07` and `INC-cb00-7107` are 203.0.113.7 in hex: four groups of
1-2 hex digits joined by one repeated separator, or two groups of 4 hex digits. They were neither
refused nor compared with the call's values, and were kept verbatim, also by a plain reveal of
that very ip. Four hex octets are now refused as an address (as the decimal `INC-203-0-113-7`
is); two hex halves are read as an ip only for the comparison, for `GDPR-2026-0042` has that shape.
"""

from __future__ import annotations

import pytest

from vault_service.domain.purpose import HEX_OCTETS as HEX_OCTETS_REASON
from vault_service.domain.purpose import pii_in, unfit_purpose, values_spelled_by

IP = "203.0.113.7"  # cb.00.71.07 in hex octets

HEX_OCTETS = ["INC-CB-00-71-07", "INC-CB.00.71.07", "INC-CB_00_71_07", "INC-CB:00:71:07-review"]
"""Four groups of two hex digits joined by one repeated separator: refused as hex octets of an address, and spelled."""
SHORT_HEX_GROUPS = ["INC-cb-0-71-7", "INC-CB-0-71-7"]
"""Hex octets with a one-digit group: compared with the call's values, not refused (review 15, finding 8)."""
HEX_HALVES = ["INC-cb00-7107", "INC-CB00.7107", "CASE-CB00_7107-v2"]
"""Two groups of 4 hex digits: spelled, not refused (a reference has the shape)."""


@pytest.mark.parametrize("purpose", HEX_OCTETS)
def test_hex_octets_are_refused_as_an_address_and_spelled(purpose: str) -> None:
    assert pii_in(purpose) == HEX_OCTETS_REASON
    assert IP in values_spelled_by(purpose)


@pytest.mark.parametrize("purpose", SHORT_HEX_GROUPS)
def test_hex_octets_with_a_one_digit_group_are_spelled_not_refused(purpose: str) -> None:
    assert unfit_purpose(purpose) is None
    assert IP in values_spelled_by(purpose)


@pytest.mark.parametrize("purpose", ["CHG-25-03-14-A", "REQ-7-A-3-C", "TEAM-A-B-C-D", "CASE-2026-A-B-C-1"])
def test_references_of_short_groups_are_no_address(purpose: str) -> None:
    # Review 15, finding 8: refused "as an IP address" that a person could not see there.
    assert unfit_purpose(purpose) is None


@pytest.mark.parametrize("purpose", HEX_HALVES)
def test_two_hex_halves_pass_the_shape_check_and_are_spelled(purpose: str) -> None:
    assert unfit_purpose(purpose) is None
    assert IP in values_spelled_by(purpose)


def test_octets_joined_by_different_separators_are_compared_not_refused() -> None:
    # Not four octets to the shape check (one repeated separator), but the ip's hex number read
    # across separators all the same (attack 15, finding 5): compared with the call's own values.
    assert unfit_purpose("INC-CB-00.71-07") is None
    assert IP in values_spelled_by("INC-CB-00.71-07")


def test_usual_references_are_still_fit() -> None:
    for purpose in ("INC-4821", "GDPR-2026-0042", "GDPR-2026-0042/INC-4821", "SECOPS-2026-000123:step-2", "REQ-A-1"):
        assert unfit_purpose(purpose) is None, purpose
    assert "32.38.0.66" in values_spelled_by("GDPR-2026-0042")  # compared with the call's ips, never refused
