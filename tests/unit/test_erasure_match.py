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
