"""Which dead letters hold a person's values (`dead-letters erase`): the matching alone.

Synthetic TEST-NET values only; no assertion message carries one.
"""

from __future__ import annotations

import json

import pytest

from etl_service.domain.erasure_match import CriteriaError, Person, read_person

IP = "203.0.113.154"
DEVICE = "erasure-dev-0154"
USER = "erased-user-0154"
PERSON_LINES = [f"user_id={USER}\n", f"ip={IP}\n", f"device_id={DEVICE}\n"]


def person(*lines: str) -> Person:
    return read_person(list(lines))


def event(**changes: object) -> str:
    base = {"user_id": "other", "device_type": "toaster", "ip": "192.0.2.9", "device_id": "other-dev"}
    return json.dumps({**base, **changes})


@pytest.mark.parametrize(
    "body",
    [
        event(user_id=USER),
        event(ip=IP),
        event(ip=f"::ffff:{IP}"),  # the spelling the vault tokenized as IP
        event(device_id=f"  {DEVICE} "),  # stripped, as the vault stores it
        '{"user_id": "a", "user_id": "' + USER + '"}',  # a repeated key: every occurrence counts
        "not json, " + json.dumps({"device_id": DEVICE}),
        '{"x": ' + "[" * 3000 + "]" * 3000 + f', "ip": "{IP}"}}',  # deeper than Python's parser goes
        '{"n": ' + "9" * 5000 + f', "user_id": "{USER}"}}',  # beyond Python's integer digit limit
        json.dumps({"event": {"device_id": DEVICE}}),  # nested: found as a JSON string
    ],
)
def test_a_body_holding_any_value_given_matches(body: str) -> None:
    matched = person(*PERSON_LINES).matches(body)
    assert matched


MAPPED_HEX = "::ffff:cb00:719a"  # 203.0.113.154, IPv4-mapped in hex


# Insider round 7, Break 1: spellings the ETL and the vault treat as the person's values, in
# bodies that are not a JSON object with the field at top level (each missed before).
@pytest.mark.parametrize(
    ("person_lines", "body"),
    [
        # L1, not_json: an escaped user id, a mapped ip, a padded device id, a trailing comma
        ([f"user_id={USER}\n"], '{"user_id": "erased-\\u0075ser-0154", "ip": "192.0.2.9",}'),
        ([f"ip={IP}\n"], '{"user_id": "u", "ip": "::ffff:' + IP + '", "x": 1,}'),
        ([f"device_id={DEVICE}\n"], '{"user_id": "u", "device_id": "' + DEVICE + ' ",}'),
        ([f"device_id={DEVICE}\n"], '{"device_id": "erasure-\\u0064ev-0154",}'),
        # L2, not_an_object: an array holding the event
        ([f"ip={IP}\n"], json.dumps([{"ip": MAPPED_HEX, "device_id": "other-dev"}])),
        ([f"device_id={DEVICE}\n"], json.dumps([{"device_id": f" {DEVICE}"}])),
        # L3, missing_field: the event nested, full-form IPv6 and an escaped user id
        ([f"ip={IP}\n"], json.dumps({"event": {"ip": f"0:0:0:0:0:ffff:{IP}"}})),
        ([f"user_id={USER}\n"], json.dumps({"event": {"user_id": USER, "ip": "192.0.2.9"}})),
        ([f"device_id={DEVICE}\n"], json.dumps({"event": {"device_id": f" {DEVICE}"}})),
        # L4, wrong_type: fields wrapped in lists
        ([f"user_id={USER}\n"], json.dumps({"user_id": [USER], "ip": ["192.0.2.9"]})),
        ([f"ip={IP}\n"], json.dumps({"user_id": ["u"], "ip": [f"::ffff:{IP}"]})),
        ([f"device_id={DEVICE}\n"], json.dumps({"device_id": [f"{DEVICE} "]})),
        # not JSON at all: unquoted values, \\u-escaped ones, an array that does not parse
        ([f"ip={IP}\n"], f"ip=::ffff:{IP}&device_id=x"),
        ([f"ip={IP}\n"], "[{'ip': '" + MAPPED_HEX + "'}"),
        ([f"ip={IP}\n"], "ip: 203.0.113.\\u0031\\u00354"),
        ([f"device_id={DEVICE}\n"], f"device_id={DEVICE}; user=u"),
        ([f"user_id={USER}\n"], f"{{user_id: {USER}, ip: 192.0.2.9"),
        ([f"user_id={USER}\n"], '{"user_id": ["erased-user-\\u00301\\u00354"], oops'),
        # an ip inside a string, a JSON document inside a string
        ([f"ip={IP}\n"], json.dumps({"note": f"seen from {IP}, twice"})),
        ([f"ip={IP}\n"], json.dumps({"raw": json.dumps({"ip": f"::ffff:{IP}"})})),
        ([f"device_id={DEVICE}\n"], '{"x": ' + "[" * 3000 + f'"  {DEVICE}"' + "]" * 3000 + "}"),
    ],
)
def test_any_spelling_of_a_value_anywhere_in_any_body_matches(person_lines: list[str], body: str) -> None:
    matched = person(*person_lines).matches(body)
    assert matched


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([{"ip": f"{IP}0"}]),
        json.dumps({"event": {"ip": "::ffff:cb00:719b", "device_id": f"{DEVICE}-b"}}),
        json.dumps({"ip": [f"1.{IP}"], "device_id": [f"x{DEVICE}"]}),
        f"ip={IP}7&device_id={DEVICE}0&user_id={USER}x",
        f"ip=1{IP}; device_id=pre-{DEVICE}; user_id={USER}-2",
        json.dumps({"note": f"{IP}.5 and {DEVICE}.old"}),
        '{"n": 154, "other": "' + USER + '",}',  # the user id under another key
    ],
)
def test_lookalikes_in_any_shape_do_not_match(body: str) -> None:
    matched = person(*PERSON_LINES).matches(body)
    assert not matched


def test_a_long_body_without_separators_is_scanned_quickly() -> None:
    body = "{" + "a" * 200_000 + ":" + "0" * 200_000
    assert not person(*PERSON_LINES).matches(body)


@pytest.mark.parametrize(
    "body",
    [
        event(ip="203.0.113.15"),  # a prefix of the person's ip
        event(ip="203.0.113.1540"),
        event(device_id=f"{DEVICE}0"),
        event(user_id=f"{USER}x"),
        event(user_id="42", n=42),
        json.dumps({"note": f"{USER} and {IP[:-1]}"}),  # bare text or a part of a value is no match
        event(),
        "",
    ],
)
def test_other_bodies_do_not_match(body: str) -> None:
    matched = person(*PERSON_LINES).matches(body)
    assert not matched


def test_user_id_42_matches_only_as_a_user_id() -> None:
    someone = person("user_id=42")
    assert someone.matches(event(user_id="42"))
    assert not someone.matches(event(n=42, locale="42"))


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([f"{IP}\n"], "line 1: expected user_id=VALUE"),
        (["# comment\n", f"mac={IP}\n"], "line 2: expected"),
        ([f"ip={IP}5\n"], "line 1: ip value is not a valid"),
        (["ip=fe80::1%eth0\n"], "line 1: ip value carries an IPv6 zone id"),
        (["device_id=a\u0007b\n"], "line 1: device_id contains control"),
        (["user_id=" + "u" * 129 + "\n"], "line 1: user_id must be 1 to 128"),
        (["\n", "# only comments\n"], "nothing to look for"),
    ],
)
def test_unusable_criteria_name_the_line_and_never_the_value(lines: list[str], error: str) -> None:
    with pytest.raises(CriteriaError) as raised:
        read_person(lines)
    message = str(raised.value)
    assert error in message
    assert not any(v in message for v in (IP, "fe80", "eth0", "u" * 20))


def test_repr_counts_values_and_shows_none() -> None:
    shown = repr(person(*PERSON_LINES))
    assert not any(v in shown for v in (IP, DEVICE, USER))
    assert "1 user ids, 1 ips, 1 device ids" in shown


IDFV = "6d92078a-8246-4ba4-ae5b-76104861e7dc"


@pytest.mark.parametrize(
    "value",
    [
        IDFV,  # an event id that is the device id (a body-less letter keeps only this)
        f"evt-{IDFV.upper()}",  # an IDFV in either case, as a group of the event id
        f"login-{USER}-17",  # the user id as a whole group
        f"{USER}",
        f"evt-{IP}",  # an address-shaped token
        f"source:{DEVICE}",
    ],
)
def test_an_attribute_naming_a_value_given_matches(value: str) -> None:
    given = person(*PERSON_LINES, f"device_id={IDFV}\n")
    assert given.matches_attribute(value)


@pytest.mark.parametrize(
    "value",
    [
        f"login-{USER}x-17",  # a longer user id
        f"login-x{USER}-17",
        f"evt-{IP}7",  # another address
        f"{IDFV}0",
        "evt-42-17",
        "",
    ],
)
def test_an_attribute_naming_another_value_does_not_match(value: str) -> None:
    given = person(*PERSON_LINES, f"device_id={IDFV}\n")
    assert not given.matches_attribute(value)
