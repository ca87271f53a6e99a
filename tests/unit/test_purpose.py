"""The reference form of a purpose, and the values a purpose can spell (insider round 8, break 1).

A purpose is kept for good in the audit log. Free text is refused by its form; what a reference
can still spell - the call's own device id or ip, in any spelling the vault normalizes to the
same value - is derived once per purpose and compared with the values of the call.
"""

from __future__ import annotations

import pytest

from tokenvault_common.device_spellings import compact_form
from tokenvault_common.ip_spellings import ips_spelled_by
from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose import MAX_PURPOSE_LENGTH, check_purpose, values_spelled_by
from vault_service.domain.purpose_numbers import _ipv4_octet_digits
from vault_service.domain.token_types import TokenType
from vault_service.service.revealing import _spells_one_of

_ATTACK_STRINGS = [
    "CASE-1 cb007107",  # 203.0.113.7 in hex without 0x
    "CASE-1 MjAzLjAuMTEzLjc=",  # base64 of an ip
    "CASE-1 ip 203.0.29447",  # an inet_aton short form
    "CASE-1 Alice Smith, 12 Elm Street, Springfield",  # a name and a street address
    "GDPR-2026-801 erase device SM-G991B-ATK8Q7ZX",  # the very device being erased
    "CASE-2026-801 device SM-G991B-ATK8Q7ZX",
]


@pytest.mark.parametrize("purpose", _ATTACK_STRINGS)
def test_free_text_is_refused_asking_for_a_reference(purpose: str) -> None:
    with pytest.raises(InvalidRequest, match="such as INC-4821"):
        check_purpose(purpose)


@pytest.mark.parametrize(
    "purpose",
    [
        "case 1",  # a blank
        "1-CASE",  # starts with a digit
        "-INC-4821",
        "INC-4821-",  # a separator at the end
        "INC--4821",  # two separators in a row
        "INC 4821",
        "INC,4821",
        "INC+4821",
        "INC=4821",
        "INC@4821",
        "INC-4821\u00e9",  # not ASCII
        "I" * (MAX_PURPOSE_LENGTH + 1),
    ],
)
def test_what_is_not_a_reference_is_refused(purpose: str) -> None:
    with pytest.raises(InvalidRequest, match="INC-4821"):
        check_purpose(purpose)


@pytest.mark.parametrize(
    "purpose",
    ["INC-4821", "GDPR-2026-0042", "CASE-SWAP-1", "benchmark", "SEC-1290:step-2", "JIRA_SEC/1290#3", "R" * 64],
)
def test_references_are_accepted(purpose: str) -> None:
    check_purpose(purpose)


@pytest.mark.parametrize(
    "purpose", ["INC-203.0.113.7", "INC-203.0.29447", "INC-203.28935", "INC-0xcb007107", "INC-0313.0.0161.07"]
)
def test_the_pattern_detectors_still_refuse_addresses_in_a_reference(purpose: str) -> None:
    with pytest.raises(InvalidRequest, match="personal data"):
        check_purpose(purpose)


def test_references_with_dotted_versions_are_not_taken_for_short_ip_forms() -> None:
    for purpose in ("REL-1.2.3", "REL-10.2", "INC-2026.12.03", "REL-v1.2.345", "REL-1.02.3"):
        check_purpose(purpose)


@pytest.mark.parametrize("purpose", ["INC-V0313.28935", "CASE-9V203.0.28935", "INC-v0203.0.28935"])
def test_a_v_before_an_octal_dotted_number_or_after_a_digit_does_not_make_it_a_version(
    purpose: str,
) -> None:
    # attack 11, finding 5: the "lone v = version" exception let each of these through
    with pytest.raises(InvalidRequest, match="IP address"):
        check_purpose(purpose)


@pytest.mark.parametrize(
    "purpose",
    [  # attack 10, finding 2: each was accepted (and stored in the audit log); inet_aton reads 203.0.115.7
        "INC-203.0.0x7307",
        "INC-203.0X7307",
        "INC-0xcb.0.29447",
        "INC-0XCB.29447",
        "INC-0313.0.29447",
        "INC-0313.29447",
        "INC-203.0000.29447",
        "INC-0203.0.29447",
        "INC-evt203.0.29447",
        "ip203.29447",
        "INC-203.0.29447x",
    ],
)
def test_purposes_holding_an_inet_aton_form_with_hex_or_octal_parts_or_glued_to_letters_are_refused(
    purpose: str,
) -> None:
    with pytest.raises(InvalidRequest, match="IP address"):
        check_purpose(purpose)


def test_a_purpose_spells_each_run_of_its_groups_case_folded() -> None:
    spelled = values_spelled_by("GDPR-2026-801-SM-G991B-ATK8Q7ZX")
    assert "sm-g991b-atk8q7zx" in spelled
    assert "2026-801" in spelled and "gdpr-2026-801-sm-g991b-atk8q7zx" in spelled
    assert "sm-g991b" in spelled and "g991b-atk8q7zx" in spelled
    assert "801-sm" in spelled
    # 4821 also as the dotted digits of 1.2.3.4's kind (attack 16, finding 3): compared only
    assert values_spelled_by("INC-4821") == {"inc", "4821", "inc-4821", "inc4821", "4.8.2.1"}


@pytest.mark.parametrize(
    "purpose",
    [
        "INC-cb007107",
        "INC-CB007107",
        "INC-0xcb007107",
        "INC-3405803783",
        "INC-203.28935",
        "INC-203.0.28935",
        "INC-0313.0.0161.07",
        "INC-0xcb.0.0x71.7",
        "INC-203.0.113.07",
        "INC-0:0:0:0:0:ffff:cb00:7107",
        "INC-0000:0000:0000:0000:0000:ffff:cb00:7107",
        "INC-ffffcb007107",
        "INC-203.0.113.7-review",
        # attack 11, finding 4: an inet_aton form glued to a letter was not read as an ip
        "INC-V203.0.28935",
        "INC-V0313.28935",
        "CASE-9V203.0.28935",
        "INC-v203.0.113.7",
    ],
)
def test_a_purpose_spells_an_ip_in_every_spelling_as_the_vault_stores_it(purpose: str) -> None:
    assert "203.0.113.7" in values_spelled_by(purpose)


@pytest.mark.parametrize(
    ("piece", "ip"),
    [
        ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("20010db8000000000000000000000001", "2001:db8::1"),
        ("42540766411282592856903984951653826561", "2001:db8::1"),
    ],
)
def test_ipv6_spellings_read_as_the_canonical_address(piece: str, ip: str) -> None:
    assert ip in ips_spelled_by(piece)


def test_small_numbers_and_words_are_not_taken_for_ips() -> None:
    for piece in ("4821", "0042", "2026", "inc", "benchmark", "cafe", "1.2.3.4.5", "203-0-113-7", "0x", ""):
        assert ips_spelled_by(piece) == frozenset(), piece
    assert values_spelled_by("GDPR-2026-0042") == {
        "gdpr",
        "2026",
        "0042",
        "gdpr-2026",
        "2026-0042",
        "gdpr-2026-0042",
        "gdpr2026",
        "20260042",
        "gdpr20260042",
        "32.38.0.66",  # 2026-0042 as two hex halves of an IPv4 address (attack 14, finding 5): compared, not refused
        # 2026-0042 read across its separator (attack 15, finding 5): the 7-hex window 2026004 and
        # the decimal 20260042, compared with the call's own values only, never refused or looked up
        "2.2.96.4",
        "1.53.36.202",
        # and its digits 20260042 as an address's dotted digits, split every way (attack 16, finding 3)
        *_ipv4_octet_digits({"20260042"}),
    }


@pytest.mark.parametrize(
    "purpose",
    ["INC-PIXEL7AGX7AS", "INC-PIXEL_7A_GX7AS", "INC-pixel.7a.gx7as", "CASE-1/PIXEL/7A/GX7AS#2", "INC-PIXEL7A-GX7AS"],
)
def test_a_purpose_spells_a_device_id_written_with_other_separators_or_none(purpose: str) -> None:
    # attack 10, finding 1: only the spelling as written was compared, so these kept the device id in the audit log
    spelled = values_spelled_by(purpose)
    assert compact_form("PIXEL-7A-GX7AS") in spelled
    assert _spells_one_of(spelled, TokenType.DEVICE_ID, ["other", "PIXEL-7A-GX7AS"])
    assert _spells_one_of(spelled, TokenType.DEVICE_ID, ["pixel 7a gx7as"])


def test_a_device_id_is_not_found_in_a_purpose_by_its_compact_form_across_part_of_a_group() -> None:
    spelled = values_spelled_by("INC-XPIXEL7AGX7AS-2")
    assert not _spells_one_of(spelled, TokenType.DEVICE_ID, ["PIXEL-7A-GX7AS", "-PIXEL-7A", "7A-GX7AS-2X", None])
