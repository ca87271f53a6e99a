"""A refused purpose is told the kind of value it holds, and what to write instead; never the value.

`GDPR-2026-801-SM-G991B-ATK8Q7ZX` (a case reference followed by a device id) was refused with the
reason "it holds an IP address": the broad reading of an address takes any four numbers of 1-3
digits close together (801, 991, 8, 7) for one. The refusal is right; its reason sent the person
looking for an address that is not there. Each refusal now names the kind it found (IP address,
device id, token, e-mail, hardware address, loose numbers) and ends in the case reference alone.
"""

from __future__ import annotations

import pytest

from tokenvault_common.pii_text import IP_ADDRESS
from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose import (
    DEVICE_ID,
    INSTEAD,
    LOOSE_NUMBERS,
    RANDOM_PART_OR_DEVICE_ID,
    VAULT_REFERENCE,
    PurposeHoldsOwnValue,
    check_purpose,
    unfit_purpose,
)
from vault_service.domain.token_types import TokenType

_KINDS = [  # (reference, the value after it, the kind the refusal must name)
    ("GDPR-2026-801-", "SM-G991B-ATK8Q7ZX", DEVICE_ID),  # the closing note's case: 801, 991, 8, 7
    ("INC-", "SM-A125F-X9K2M7", DEVICE_ID),  # 125, 9, 2, 7: in an octet's range, but digits between letters
    ("CASE-7-", "G991B-ATK8Q7ZX", DEVICE_ID),
    ("INC-", "801-991-8-7", LOOSE_NUMBERS),  # no address (801 > 255) and no letters: loose numbers
    ("GDPR-2026-801-", "Pixel-7a-GX7AS", RANDOM_PART_OR_DEVICE_ID),  # mixed case: a token's random part too
    ("INC-", "203.0.113.7", IP_ADDRESS),
    ("INC-", "203-0-113-7", IP_ADDRESS),
    ("INC-", "203x0x113x7", IP_ADDRESS),  # one repeated separator: an address spelled with letters
    ("INC-", "0203-0-113-7", IP_ADDRESS),  # a leading zero only the broad reading takes
    ("INC-", "0xcb007107", IP_ADDRESS),
    ("INC-G991B-", "203X0X113X7", IP_ADDRESS),  # a device-like group before it does not hide the address
    ("INC-", "ip_7qwKnwTSu2ecvWSU-DjgMw", VAULT_REFERENCE),
    ("INC-", "aa:bb:cc:dd:ee:ff", "it holds a hardware address"),
    ("INC-", "alice@example.org", "it holds an e-mail address"),
    ("INC-", "4155550123", "it holds an identifier-like number"),
]


@pytest.mark.parametrize(("reference", "value", "kind"), _KINDS, ids=[k[1] for k in _KINDS])
def test_a_refused_purpose_is_told_the_kind_of_value_it_holds_and_never_the_value(
    reference: str, value: str, kind: str
) -> None:
    reason = unfit_purpose(reference + value)
    assert reason is not None and kind in reason, reason
    assert reason.endswith(INSTEAD) and "such as INC-4821" in reason
    assert value.casefold() not in reason.casefold()
    for other in {IP_ADDRESS, DEVICE_ID, LOOSE_NUMBERS, VAULT_REFERENCE, RANDOM_PART_OR_DEVICE_ID} - {kind}:
        assert other not in reason, reason


def test_the_device_id_after_a_case_reference_is_refused_as_a_device_id_not_an_address() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_purpose("GDPR-2026-801-SM-G991B-ATK8Q7ZX")
    message = str(refused.value)
    assert "device id" in message and "IP address" not in message, message
    assert "G991B" not in message and "ATK8Q7ZX" not in message
    check_purpose("GDPR-2026-801")  # what the message asks for is accepted


@pytest.mark.parametrize(
    ("token_type", "kind", "not_kind"),
    [(TokenType.DEVICE_ID, "the device id", "IP address"), (TokenType.IP, "the IP address", "device id")],
)
def test_a_purpose_spelling_a_value_revealed_in_plain_is_told_which_kind(
    token_type: TokenType, kind: str, not_kind: str
) -> None:
    message = str(PurposeHoldsOwnValue(token_type))
    assert f"purpose must not contain {kind} this call reveals in plain" in message, message
    assert not_kind not in message and message.endswith(INSTEAD)
