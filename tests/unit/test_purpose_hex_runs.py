"""A purpose spells an ip written as hex glued to letters, as the ETL's own-value check reads it.

Attack 12, finding 5: maximal hex runs glued to letters. Review 12, finding 2: a neighbouring a-f
letter makes the maximal run another number (`INC-aCB007107`), so windows of 7-8 hex digits (and
8-10 decimal digits) inside a longer run are read as IPv4 addresses too, by the vault and the ETL.
"""

from __future__ import annotations

import pytest

import vault_service.domain.purpose_runs as runs_module
import vault_service.domain.purpose_spellings as purpose_module
from etl_service.domain.own_values import own_value_in
from tokenvault_common.ip_spellings import ips_spelled_by
from vault_service.domain.purpose import unfit_purpose, values_spelled_by

IP = "203.0.113.7"  # cb007107 in hex, 3405803783 in decimal

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
GLUED_TO_HEX_LETTERS = [
    "INC-aCB007107",  # a hex letter before: the maximal run acb007107 is another number
    "INC-CB007107F",  # ... after
    "INC-fCB007107e",  # ... on both sides
    "INC-xcb0071070y",  # a digit after
    "INC-facecb007107",
]
"""Forms the maximal-run reading missed; each holds 203.0.113.7 as a window of its hex run."""
DECIMAL_IN_A_LONGER_RUN = ["INC-A3405803783", "INC-A34058037831"]
"""203.0.113.7 as a decimal window: such purposes are refused anyway (8 or more digits are an
identifier-like number), but the vault and the ETL read them alike."""


@pytest.mark.parametrize("purpose", [*GLUED, *GLUED_TO_HEX_LETTERS])
def test_an_ip_in_hex_glued_to_letters_is_spelled_by_the_purpose(purpose: str) -> None:
    assert unfit_purpose(purpose) is None  # a reference to the pattern detectors: only the comparison finds it
    assert IP in values_spelled_by(purpose)


def test_an_ip_of_seven_hex_digits_glued_to_hex_letters_is_spelled_too() -> None:
    # 10.0.0.1 is a000001: seven digits, so the windows of seven are read as well as those of eight.
    assert "10.0.0.1" in values_spelled_by("INC-ba000001f")
    assert own_value_in("INC-ba000001f", "10.0.0.1", "") is not None


def test_an_ip_as_a_decimal_window_inside_a_longer_run_is_spelled() -> None:
    for purpose in DECIMAL_IN_A_LONGER_RUN:
        assert unfit_purpose(purpose) is not None  # refused before any comparison: an identifier-like number
        assert IP in values_spelled_by(purpose)


@pytest.mark.parametrize(
    "purpose",
    [
        *GLUED,
        *GLUED_TO_HEX_LETTERS,
        *DECIMAL_IN_A_LONGER_RUN,
        "INC-ba000001f",
        "INC-cb007107",
        "INC-CB00710x",
        "INC-cb00-7107",  # two hex halves, and hex octets (attack 14, finding 5): one shared reader
        "INC-CB-00-71-07",
        "INC-0a-0-0-01",
    ],
)
def test_the_vault_and_the_etl_agree_on_which_glued_hex_forms_hold_the_ip(purpose: str) -> None:
    for ip in (IP, "10.0.0.1"):
        vault_reads_it = ip in values_spelled_by(purpose)
        etl_reads_it = own_value_in(purpose, ip, "") is not None
        assert vault_reads_it == etl_reads_it, (purpose, ip)


SPLIT_AT_OTHER_PLACES = [
    "INC-cb00710-7",
    "INC-cb0-07107",
    "INC-C-B007107",
    "INC-CB-00-7107",
    "INC-cb:00:7107",
    "INC-34058-03783",
    "INC-340-580-3783",
    "INC-0x-cb-007107",
]
"""203.0.113.7's hex or decimal number split by separators at other places than octets or halves
(attack 15, finding 5): each passes the shape check and was read as no address at all. The ETL
reads an opaque event id's number windows within its runs only (joining a UUID's groups across
its dashes would add windows to every id, each a chance refusal), so these are left out of the
test that the two agree."""


@pytest.mark.parametrize("purpose", SPLIT_AT_OTHER_PLACES)
def test_an_ips_number_split_at_any_places_is_spelled_as_the_unsplit_number(purpose: str) -> None:
    assert unfit_purpose(purpose) is None  # only the comparison with the call's own values finds it
    assert IP in values_spelled_by(purpose)


def test_the_finding_s_spellings_of_its_ip_are_spelled() -> None:
    for purpose in ("REQ-c6128-e52", "REQ-c61-28e52", "REQ-3323-104850", "REQ-332-310-4850"):
        assert "198.18.142.82" in values_spelled_by(purpose), purpose


def test_a_hex_run_shorter_than_any_address_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 digits is below 1.0.0.0 (0x1000000 has 7): such a run is never handed to the ip reader, in
    # whole or as a window. Uncached (`__wrapped__`), so the reading itself runs under the spy.
    read: list[str] = []
    real = ips_spelled_by

    def spy(piece: str) -> frozenset[str]:
        read.append(piece)
        return real(piece)

    monkeypatch.setattr(purpose_module, "ips_spelled_by", spy)
    monkeypatch.setattr(runs_module, "ips_spelled_by", spy)  # the walk over the groups reads them
    runs_module.group_runs.cache_clear()  # and is cached apart
    spelled = values_spelled_by.__wrapped__("INC-xabc123y")
    assert "abc123" not in read and read  # the groups were read, the short run was not
    assert not any(value.count(".") == 3 for value in spelled)
    spelled = values_spelled_by.__wrapped__("INC-xabc1234y")  # 7 digits: read
    assert "abc1234" in read and "10.188.18.52" in spelled


def test_the_windows_of_a_long_run_are_bounded() -> None:
    # A run longer than any purpose is not windowed: the work per distinct purpose stays bounded.
    long_run = "INC-" + "cb007107" * 20
    assert IP not in values_spelled_by.__wrapped__(long_run)
    assert IP in values_spelled_by.__wrapped__(long_run[:64])


def test_an_ipv6_address_in_hex_glued_to_letters_is_spelled_too() -> None:
    assert "2001:db8::1" in values_spelled_by("INC-ip20010db8000000000000000000000001x")
