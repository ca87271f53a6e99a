"""Attack 37, K1: `dead-letters erase` finds a person's values sent as JSON numbers, an ip spelled zero-padded,
with `0x` parts, fullwidth or comma-joined in a body, and a user id in an XML body - and still deletes no
other person's letter by coincidence (threat-model.md, *Not deleted by coincidence*).

Synthetic TEST-NET values only; no assertion message carries one.
"""

from __future__ import annotations

import json

import pytest

from etl_service.domain.erasure_match import Person, read_person

IP = "203.0.113.42"
USER = "4811902233"  # a numeric user id (schema drift: sent as a JSON number)
IMEI = "356938035643809"  # a device id sent as a JSON number


def person(*lines: str) -> Person:
    return read_person(list(lines))


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() or c == "." else c for c in text)


@pytest.mark.parametrize(
    ("line", "body"),
    [
        (f"user_id={USER}", f'{{"user_id": {USER}, "ip": "192.0.2.9"}}'),
        ("user_id=118", '{"user_id": 118}'),
        ("user_id=118", '{"event": {"user_id": [118.0]}}'),  # a float of integral value: the integer
        ("user_id=118", '{"user_id": 1.18e2}'),
        (f"device_id={IMEI}", f'{{"device_id": {IMEI}}}'),
        (f"device_id={IMEI}", f'{{"imei": {IMEI}}}'),  # long: under any key (schema drift)
        ("device_id=42", '{"device_id": 42}'),  # short: under its own key
        (f"ip={IP}", '{"ip": 3405803818}'),  # the ip as a number, under `ip`
        (f"ip={IP}", '{"ip": "3405803818"}'),
        (f"ip={IP}", '{"ip": "cb00712a"}'),
        (f"ip={IP}", '{"ip": "203x0x113x42"}'),
        (f"ip={IP}", '{"ip": "203.000.113.042"}'),  # %03d: refused as no ip, dead-lettered
        (f"ip={IP}", json.dumps({"note": "from 203.000.113.042, twice"})),
        (f"ip={IP}", json.dumps({"ip": "0xcb.0.113.42"})),
        (f"ip={IP}", json.dumps({"trace": "peer 0xcb00712a"})),
        (f"ip={IP}", json.dumps({"ip": fullwidth(IP)})),
        (f"ip={IP}", json.dumps({"ip": "203,0,113,42"})),
        (f"ip={IP}", json.dumps({"ip": "203_000_113_042"})),
        (f"ip={IP}", "ip: 203.000.113.042; user=u"),  # not JSON
        (f"user_id={USER}", f"<event><user_id>{USER}</user_id><ip>192.0.2.9</ip></event>"),  # XML
        ("user_id=u-118", '<event><user_id type="string"> u-118 </user_id></event>'),
        ("user_id=118", "<user_id>118</user_id"),
    ],
)
def test_a_value_sent_as_a_number_or_in_another_spelling_matches(line: str, body: str) -> None:
    matched = person(line).matches(body)
    assert matched


@pytest.mark.parametrize(
    ("line", "body"),
    [
        ("user_id=118", '{"n": 118, "user_id": 42}'),  # a number under another key is any count's
        ("user_id=118", '{"user_id": 1180}'),
        ("user_id=118", '{"user_id": 11.8}'),
        ("user_id=118", '{"user_id": 118.5}'),
        ("user_id=118", '{"count": 118.0}'),
        ("user_id=118", "<n>118</n><user_id>1180</user_id><user_ids>118</user_ids>"),
        ("device_id=42", '{"n": 42, "device_id": "x"}'),  # a short device id: only under device_id
        ("device_id=4201", '{"device_id": 42.01}'),
        (f"device_id={IMEI}", f'{{"ts": {int(IMEI) + 1}}}'),
        (f"ip={IP}", '{"n": 3405803818, "order": "3405803818"}'),  # every 8-10 digit number is some address
        (f"ip={IP}", '{"version": "203.0.28970", "hex": "cb00712a"}'),  # short forms outside `ip`
        (f"ip={IP}", '{"note": "203x0x113x42"}'),  # joined by letters: only under `ip`
        (f"ip={IP}", json.dumps({"ip": "1.203.000.113.042"})),  # inside a longer run of groups
        (f"ip={IP}", json.dumps({"rgba": "203,0,113,42,7"})),
        (f"ip={IP}", json.dumps({"ip": "203.000.113.043"})),
        (f"ip={IP}", json.dumps({"ip": "203,0,113,420"})),
        (f"ip={IP}", json.dumps({"ip": "203,0;113,42"})),
        (f"ip={IP}", json.dumps({"ip": "0xcb00712b"})),
    ],
)
def test_other_numbers_and_spellings_of_other_values_do_not_match(line: str, body: str) -> None:
    matched = person(line).matches(body)
    assert not matched


def test_the_tester_s_three_letters_all_match_the_officer_s_criteria() -> None:
    # Attack 37, K1: with user_id, device_id (IMEI) and ip given, only the letter with a canonical ip string matched.
    base = {"device_type": "android", "locale": "RU", "app_version": "1.2.3"}
    letters = [
        json.dumps({**base, "user_id": int(USER), "ip": IP, "device_id": "dev-k1"}),
        json.dumps({**base, "user_id": int(USER), "ip": "198.51.100.42", "device_id": int(IMEI)}),
        json.dumps({**base, "user_id": int(USER), "ip": "203.000.113.042", "device_id": int(IMEI)}),
    ]
    officer = person(f"user_id={USER}", f"device_id={IMEI}", f"ip={IP}")
    assert [officer.matches(body) for body in letters] == [True, True, True]
    assert [person(f"user_id={USER}").matches(body) for body in letters] == [True, True, True]
    assert [person(f"device_id={IMEI}").matches(body) for body in letters] == [False, True, True]
    assert [person(f"ip={IP}").matches(body) for body in letters] == [True, False, True]
