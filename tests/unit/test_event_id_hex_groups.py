"""The ETL refuses an event id that holds its event's own ip in hex octets or halves (attack 14, finding 5).

`INC-CB-00-71-07`, `INC-CB.00.71.07` and `INC-cb00-7107` are 203.0.113.7 in hex. The vault's
purpose check read them since fc16c01; the ETL's own-value check did not, so such an id was
stored in clear in user_logins. Both now read them with one reader
(`tokenvault_common.ip_spellings.ips_in_hex_groups`); the ETL runs it only where the id holds the
substrings such a spelling must (`ip_forms`' hints, `may_spell_hex_octets`), and these tests check
that the hints never hide what the reader finds. TEST-NET and private addresses only.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from etl_service.domain.own_values import OWN_VALUE_PROBLEM, own_value_in
from tokenvault_common.ip_spellings import ips_in_hex_groups, may_spell_hex_octets, spells_hex_octets
from vault_service.domain.purpose import values_spelled_by

IP = "203.0.113.7"  # cb.00.71.07, cb00 7107
OWN_IP = OWN_VALUE_PROBLEM.format(field="ip")

HEX_SPELLINGS = [
    "INC-CB-00-71-07",
    "INC-cb00-7107",
    "INC-CB.00.71.07",
    "evt-cb-0-71-7-000042",
    "evt_CB_00_71_07",
    "evt/cb:00:71:07",
    "evt cb00.7107",
    "cb00_7107",
    "evt\u00b7cb\u00b700\u00b771\u00b707",  # a non-ASCII separator is a separator, as the vault reads it
    "AB-CB-00-71-07",  # a fifth group does not hide four
]
NOT_THE_IP = [
    "INC-CB-00.71-07",  # octets joined by different separators: no address to a reader
    "INC-xCB-00-71-07",  # a group of three: not an octet
    "INC-cb00-71070",  # a half of five digits
    "INC-cb007-107",
    "INC-CB--00--71--07",  # two characters between groups
    "INC-cb00--7107",
    "evt-20261203-000042",
    "6f1c2a9e-4b7d-4c1e-9a3f-2d8b5e7c0a41",
]


@pytest.mark.parametrize("event_id", HEX_SPELLINGS)
def test_an_event_id_holding_its_own_ip_in_hex_groups_is_refused(event_id: str) -> None:
    assert own_value_in(event_id, IP, "") == OWN_IP
    assert own_value_in(event_id, f"::ffff:{IP}", "") == OWN_IP  # IPv4-mapped: the same address
    assert own_value_in(event_id, "203.0.113.8", "") is None  # another event's ip: an opaque id to this one


@pytest.mark.parametrize("event_id", NOT_THE_IP)
def test_groups_that_spell_no_address_to_a_reader_are_not_refused(event_id: str) -> None:
    assert own_value_in(event_id, IP, "") is None


@pytest.mark.parametrize("purpose", ["INC-CB-00-71-07", "INC-cb00-7107", "INC-CB.00.71.07", "INC-0a-0-0-01"])
def test_the_vault_and_the_etl_read_one_spelling_alike(purpose: str) -> None:
    for ip in (IP, "10.0.0.1"):
        assert (ip in values_spelled_by(purpose)) == (own_value_in(purpose, ip, "") is not None), (purpose, ip)


def test_an_ip_with_few_two_digit_octets_is_found_too() -> None:
    # 10.0.0.1 is a.0.0.1: every octet a single hex digit, so the octet hints are weak and the
    # group-shape test decides whether the reader runs.
    for event_id in ("evt-a-0-0-1", "evt-0a.00.00.01", "evt-0A:0:00:1", "x-0a00-0001"):
        assert own_value_in(event_id, "10.0.0.1", "") == OWN_IP, event_id
    assert own_value_in("evt-a-0-0-2", "10.0.0.1", "") is None


def test_hex_octets_below_one_zero_zero_zero_are_read_as_the_vault_reads_them() -> None:
    # 0.0.0.1 has no number form to search (below 1.0.0.0), but four hex octets are its address.
    assert own_value_in("evt-0-0-0-1", "0.0.0.1", "") == OWN_IP
    assert own_value_in("evt-0000-0001", "0.0.0.1", "") is None  # two halves: only from 1.0.0.0 up


_HEX_GROUP = st.text("0123456789abcdefABCDEF", min_size=1, max_size=5)
_SEPARATOR = st.sampled_from(["-", ".", "_", ":", "/", " ", "~", "\u00b7", "--", "x", "g"])


@st.composite
def _hex_group_texts(draw: st.DrawFn) -> str:
    groups = draw(st.lists(_HEX_GROUP, min_size=2, max_size=6))
    text = draw(_HEX_GROUP | st.just("evt"))
    for group in groups:
        text += draw(_SEPARATOR) + group
    return text


@settings(max_examples=400, deadline=None)
@given(text=_hex_group_texts())
@example(text="evt-cb-00-71-07")
@example(text="a-0-0-1")
@example(text="0a00:0001")
def test_the_etls_hints_never_hide_what_the_shared_reader_finds(text: str) -> None:
    # The hints are necessary conditions: for every address the reader finds in an id, the ETL
    # refuses that id for an event of that address.
    folded = text.casefold()
    for ip in ips_in_hex_groups(folded):
        assert own_value_in(text, ip, "") == OWN_IP, (text, ip)
    if spells_hex_octets(folded):
        assert may_spell_hex_octets(folded)


@settings(max_examples=200, deadline=None)
@given(number=st.integers(0, 2**32 - 1), separator=st.sampled_from(["-", ".", "_", ":", "#", "\u2013"]))
def test_any_ipv4_address_in_hex_octets_or_halves_is_refused(number: int, separator: str) -> None:
    ip = str(ipaddress.IPv4Address(number))
    octets = separator.join(f"{octet:02x}" for octet in ipaddress.IPv4Address(number).packed)
    short = separator.join(f"{octet:x}" for octet in ipaddress.IPv4Address(number).packed)
    assert own_value_in(f"evt-{octets}-x", ip, "") == OWN_IP
    assert own_value_in(f"evt-{short.upper()}", ip, "") == OWN_IP
    if number >= 2**24:
        assert own_value_in(f"evt{separator}{number:08x}"[:-4] + separator + f"{number:08x}"[-4:], ip, "") == OWN_IP
