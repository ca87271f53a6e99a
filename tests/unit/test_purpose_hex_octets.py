"""A purpose spells an ip written as hex octets or as two hex halves (attack 14, finding 5).

`INC-CB-00-71-07`, `INC-CB.00.71.07` and `INC-cb00-7107` are 203.0.113.7 in hex: four groups of
1-2 hex digits joined by one repeated separator, or two groups of 4 hex digits. They were neither
refused nor compared with the call's values, and were kept verbatim, also by a plain reveal of
that very ip. Four hex octets are now refused as an address (as the decimal `INC-203-0-113-7`
is); two hex halves are read as an ip only for the comparison, for `GDPR-2026-0042` has that shape.
"""

from __future__ import annotations

import pytest

from tokenvault_common.pii_text import IP_ADDRESS
from vault_service.domain.purpose import pii_in, unfit_purpose, values_spelled_by

IP = "203.0.113.7"  # cb.00.71.07 in hex octets

HEX_OCTETS = ["INC-CB-00-71-07", "INC-cb-0-71-7", "INC-CB.00.71.07", "INC-CB_00_71_07", "INC-CB:00:71:07-review"]
"""Four hex octets joined by one repeated separator: refused as an address, and spelled."""
HEX_HALVES = ["INC-cb00-7107", "INC-CB00.7107", "CASE-CB00_7107-v2"]
"""Two groups of 4 hex digits: spelled, not refused (a reference has the shape)."""


@pytest.mark.parametrize("purpose", HEX_OCTETS)
def test_hex_octets_are_refused_as_an_address_and_spelled(purpose: str) -> None:
    assert pii_in(purpose) == IP_ADDRESS
    assert IP in values_spelled_by(purpose)


@pytest.mark.parametrize("purpose", HEX_HALVES)
def test_two_hex_halves_pass_the_shape_check_and_are_spelled(purpose: str) -> None:
    assert unfit_purpose(purpose) is None
    assert IP in values_spelled_by(purpose)


def test_octets_joined_by_different_separators_are_not_read_as_one_address() -> None:
    assert IP not in values_spelled_by("INC-CB-00.71-07")


def test_usual_references_are_still_fit() -> None:
    for purpose in ("INC-4821", "GDPR-2026-0042", "GDPR-2026-0042/INC-4821", "SECOPS-2026-000123:step-2", "REQ-A-1"):
        assert unfit_purpose(purpose) is None, purpose
    assert "32.38.0.66" in values_spelled_by("GDPR-2026-0042")  # compared with the call's ips, never refused
