"""A purpose spells an ip written as hex glued to letters, as the ETL's own-value check reads it (attack 12, #5)."""

from __future__ import annotations

import pytest

from etl_service.domain.own_values import own_value_in
from vault_service.domain.purpose import unfit_purpose, values_spelled_by

IP = "203.0.113.7"  # cb007107 in hex

GLUED = [
    "INC-ipCB007107",
    "INC-VCB007107-2",
    "INC-CB007107x",
    "INC.cb007107V",
    "INCVCB007107",
    "CASE-9VCB007107",
    "INC_ip00cb007107z",  # leading zeros do not change the number
    "INC-ipCB007107-v2",
]


@pytest.mark.parametrize("purpose", GLUED)
def test_an_ip_in_hex_glued_to_letters_is_spelled_by_the_purpose(purpose: str) -> None:
    assert unfit_purpose(purpose) is None  # a reference to the pattern detectors: only the comparison finds it
    assert IP in values_spelled_by(purpose)


@pytest.mark.parametrize("purpose", [*GLUED, "INC-cb007107", "INC-CB00710x", "INC-xcb0071070y", "INC-cb00-7107"])
def test_the_vault_and_the_etl_agree_on_which_glued_hex_forms_hold_the_ip(purpose: str) -> None:
    vault_reads_it = IP in values_spelled_by(purpose)
    etl_reads_it = own_value_in(purpose, IP, "") is not None
    assert vault_reads_it == etl_reads_it


def test_a_hex_run_shorter_than_any_address_or_part_of_a_longer_run_is_not_read() -> None:
    # 6 digits is below 1.0.0.0; a longer run is another number (cb0071070 is not cb007107).
    assert values_spelled_by("INC-xabc123y") == values_spelled_by.__wrapped__("INC-xabc123y")
    assert not any(value.count(".") == 3 for value in values_spelled_by("INC-xabc123y"))
    assert IP not in values_spelled_by("INC-xcb0071070y")


def test_an_ipv6_address_in_hex_glued_to_letters_is_spelled_too() -> None:
    assert "2001:db8::1" in values_spelled_by("INC-ip20010db8000000000000000000000001x")
