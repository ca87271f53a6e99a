"""Attack 37, K2: the event's own ip in decimal octets (12 digits, `%03d` each; four groups joined by
letters or zero-padded) and its own device id of 8-11 characters without separators, in an event id or
a field stored in clear, are refused - and other ids are not, by coincidence.

Synthetic TEST-NET values only; no assertion message carries one.
"""

from __future__ import annotations

import json
import random
import socket
import uuid

import pytest

from etl_service.domain.own_values import own_value_in
from etl_service.domain.validation import Reason, Rejection, parse_login_event
from tokenvault_common.ip_spellings import ips_in_decimal_groups, padded_octets

IP = "203.0.113.42"
OWN_IP = "the event_id attribute must be an opaque id, but it holds the event's own ip"
OWN_DEVICE = "the event_id attribute must be an opaque id, but it holds the event's own device_id"


@pytest.mark.parametrize(
    "event_id",
    [
        "evt-203000113042-x",  # each octet %03d, one after the other (attack 37, K2)
        "EVT203000113042",
        "203x0x113x42",  # four decimal groups joined by a letter (attack 37, K2)
        "evt-203X0X113X42-y",
        "evt-203x000x113x042",
        "evt-203_000_113_042",  # zero-padded with punctuation: `inet_aton` reads 042 as 34
        "evt-203.000.113.042",
        "evt-203 - 0 - 113 - 42",
        "evt-203of0of113of42",
    ],
)
def test_an_id_holding_its_own_ip_in_decimal_octets_is_refused(event_id: str) -> None:
    assert own_value_in(event_id, IP, "") == OWN_IP
    assert own_value_in(event_id, f"::ffff:{IP}", "") == OWN_IP  # the general path (`ip_forms`) too
    assert own_value_in(event_id, f" {IP} ", "") == OWN_IP


@pytest.mark.parametrize(
    "event_id",
    [
        "evt-203000113043-x",  # another address's 12 digits
        "evt-20300011304-x",
        "evt-203x0y113x42",  # joined by different separators: not read (coincidences, see below)
        "evt-203x0x113x4",
        "evt-203x0x113x420",
        "evt-203x256x113x42",
        "evt-1a2b3c4d",
    ],
)
def test_an_id_holding_another_address_in_decimal_octets_is_not_refused(event_id: str) -> None:
    assert own_value_in(event_id, IP, "") is None
    assert own_value_in(event_id, f"::ffff:{IP}", "") is None


def test_a_field_stored_in_clear_holding_its_own_ip_in_decimal_octets_is_refused() -> None:
    for user_id in ("ip203000113042", "u-203x0x113x42", "u-203_000_113_042"):
        with pytest.raises(Rejection) as refused:
            parse_login_event(_body(user_id=user_id), event_id="evt-opaque-1")
        assert refused.value.reason == Reason.OWN_VALUE_IN_FIELD
        assert "'user_id'" in refused.value.detail
    with pytest.raises(Rejection) as refused:
        parse_login_event(_body(user_id="u-1"), event_id="evt-203x0x113x42")
    assert refused.value.reason == Reason.INVALID_EVENT_ID


@pytest.mark.parametrize(
    ("event_id", "device_id"),
    [
        ("evt-g991batk8q7-1", "G991B-ATK8Q7"),  # 11 characters with its dash, 10 without (attack 37, K2)
        ("evt-AB12CD34-7", "AB-12-CD-34"),
        ("evt-kab12cd3-x", "Kab12-cd3"),
    ],
)
def test_an_id_holding_its_own_short_lettered_device_id_without_separators_is_refused(
    event_id: str, device_id: str
) -> None:
    assert own_value_in(event_id, IP, device_id) == OWN_DEVICE


def test_a_short_device_id_of_digits_or_under_8_characters_is_still_not_searched_without_separators() -> None:
    assert own_value_in("evt-593475928-1", IP, "593-47-5928") is None  # digits only: counters are made of them
    assert own_value_in("evt-ab12cd3-1", IP, "ab1-2cd3") is None  # 7 characters without the dash
    assert own_value_in("evt-ab12cd35-1", IP, "AB-12-CD-34") is None


def test_decimal_groups_are_read_with_one_repeated_separator_and_bounded_on_demand() -> None:
    assert ips_in_decimal_groups("203x0x113x42") == {IP}
    assert ips_in_decimal_groups("203,000,113,042") == {IP}
    assert ips_in_decimal_groups("203x0x113x42", letters=False) == frozenset()
    assert ips_in_decimal_groups("1.203.0.113.42", bounded=True) == frozenset()
    assert ips_in_decimal_groups("203.0.113.42.5", bounded=True) == frozenset()
    assert ips_in_decimal_groups("x.203.0.113.42.y", bounded=True) == {IP}
    assert ips_in_decimal_groups("1a2b3c4") == frozenset()
    assert padded_octets(socket.inet_aton(IP)) == "203000113042"


def test_opaque_ids_are_not_refused_by_coincidence() -> None:
    """Ids of the bench's shapes (file digests and counters, UUIDs) beside usual and small-octet ips: none refused.

    Measured beyond this test (1,000,000 ids of the bench's shape, attack 37, K2): joined by any
    separators, four small octets (1.2.3.4) were read in 68 ids; one repeated separator, 1 id
    (1.1.1.1), 0 for any ip of larger octets.
    """
    rng = random.Random(37)
    ips = ["203.0.113.42", "198.51.100.7", "10.0.0.1", "192.0.2.10", "100.64.1.200"]
    refused = 0
    for index in range(3_000):
        event_id = f"file-{rng.getrandbits(64):016x}-{index:07d}"
        user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for ip in ips:
            refused += own_value_in(f"{event_id}\n{user_id}\nRU", ip, "593-47-5928") is not None
    assert refused == 0


def _body(**changes: str) -> str:
    base = {"user_id": "u", "device_type": "ios", "ip": IP, "device_id": "dev-x1", "locale": "RU", "app_version": "1.2"}
    return json.dumps({**base, **changes})
