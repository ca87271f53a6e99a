"""Which dead letters hold a person's values (`dead-letters erase`): the matching alone.

Synthetic TEST-NET values only; no assertion message carries one.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.domain.erasure_match import CriteriaError, Person, read_person
from etl_service.domain.event_id_match import full_ip_spelling

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
        '{"n": 154, "other": "' + USER + 'x",}',  # a longer user id under another key
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
def test_an_event_id_naming_a_value_given_matches(value: str) -> None:
    given = person(*PERSON_LINES, f"device_id={IDFV}\n")
    assert given.matches_event_id(value, body_read=False)


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
def test_an_event_id_naming_another_value_does_not_match(value: str) -> None:
    given = person(*PERSON_LINES, f"device_id={IDFV}\n")
    assert not given.matches_event_id(value, body_read=False)


# attack 11, finding 3: other spellings of the person's ip and device id in an event id
SPELLED_IP = "203.0.113.7"
SPELLED_DEVICE = "PIXEL-7A-GX7AS"


@pytest.mark.parametrize(
    "event_id",
    [
        "login_203_0_113_7",
        "evt-203-0-113-7",
        "evt_203 0 113 7",
        "evt-cb007107",  # one hex number
        "evt-3405803783",  # one decimal number
        "evt-203.0.28935",  # inet_aton's short form
        "evt-0xcb.0.113.7",
        "evt-203.0.0x71.7",
        "203.000.113.007",
        "203%2E0%2E113%2E7",
        "\uff12\uff10\uff13.\uff10.\uff11\uff11\uff13.\uff17",  # fullwidth digits
        "evt-PIXEL7AGX7AS-1",
        "evt-pixel_7a_gx7as",
        "evt-PIXEL.7A.GX7AS",
        "e-\uff30\uff29\uff38\uff25\uff2c-7A-GX7AS",  # fullwidth letters
    ],
)
def test_an_event_id_spelling_the_ip_or_device_id_otherwise_matches(event_id: str) -> None:
    given = person(f"ip={SPELLED_IP}\n", f"device_id={SPELLED_DEVICE}\n")
    assert given.matches_event_id(event_id, body_read=False)


@pytest.mark.parametrize(
    "event_id",
    [
        "evt-203.0.113.77",  # another address
        "evt-203-0-113-77",
        "evt-1203-0-113-7",
        "evt-PIXEL7AGX7ASX-1",  # another device, longer
        "evt-XPIXEL-7A-GX7AS",
    ],
)
def test_an_event_id_spelling_another_ip_or_device_id_does_not_match(event_id: str) -> None:
    given = person(f"ip={SPELLED_IP}\n", f"device_id={SPELLED_DEVICE}\n")
    assert not given.matches_event_id(event_id, body_read=False)


# attack 12, finding 4: every group of 8 to 39 digits is some address as a whole number. Dates,
# epoch seconds and order numbers named other people's ips by coincidence, and their letters were
# deleted: on a letter whose body was read, the body decides. (The first five ips are what these
# counters read as, not anyone's.)
WHOLE_NUMBERS = [
    ("1.53.41.83", "evt-20261203-000042"),  # a date, read in decimal
    ("32.38.18.3", "evt-20261203-000042"),  # the same date, read in hex
    ("105.48.207.0", "login-1764806400-ab12"),  # an epoch second
    ("::19a:e6a8:987b", "ev-1764806400123"),  # epoch milliseconds, read as IPv6
    ("7.91.205.21", "order-123456789"),  # an order number
    (SPELLED_IP, "evt-3405803783"),
    (SPELLED_IP, "evt-cb007107"),
    (SPELLED_IP, "031300070407"),  # inet_aton's octal, one part
]


@pytest.mark.parametrize(("ip", "event_id"), WHOLE_NUMBERS)
def test_a_whole_number_in_the_event_id_of_a_letter_whose_body_was_read_names_nobody(ip: str, event_id: str) -> None:
    assert not person(f"ip={ip}\n").matches_event_id(event_id, body_read=True)


@pytest.mark.parametrize(("ip", "event_id"), WHOLE_NUMBERS)
def test_a_whole_number_names_the_ip_when_the_event_id_is_all_there_is(ip: str, event_id: str) -> None:
    assert person(f"ip={ip}\n").matches_event_id(event_id, body_read=False)


@pytest.mark.parametrize(
    "event_id",
    [
        "evt-0xcb007107",  # one number, but written as an address: 0x
        "evt-203.0.0x7107",  # a short form, but with a 0x part: no version, decimal or price
        "evt-0xcb.0.113.7",
        "evt-0313.0.0161.07",  # four parts, octal
        "login_203_0_113_7",
        "203%2E0%2E113%2E7",
        "evt-203.0.113.7",
        "evt-::ffff:cb00:7107",
    ],
)
def test_an_address_with_dots_colons_or_0x_names_the_ip_whether_or_not_the_body_was_read(event_id: str) -> None:
    assert person(f"ip={SPELLED_IP}\n").matches_event_id(event_id, body_read=True)


# attack 12, finding 3: a redriven original's event id can be ~256 kB; `int` refuses over 4,300 digits
@pytest.mark.parametrize("event_id", ["9" * 250_000, "evt-" + "1" * 5000, "0" * 5000, "f" * 5000 + "-1"])
def test_an_over_long_number_in_an_event_id_is_no_address_and_no_error(event_id: str) -> None:
    assert not person(f"ip={SPELLED_IP}\n").matches_event_id(event_id, body_read=False)


def test_leading_zeros_do_not_hide_an_address_in_an_event_id() -> None:
    assert person(f"ip={SPELLED_IP}\n").matches_event_id("evt-" + "0" * 5000 + "3405803783", body_read=False)


# attack 11, finding 1: what the ETL writes itself, and other people's event ids, name nobody
NOT_JSON_DETAIL = "body is not JSON (Expecting value at position 0)"
TOO_DEEP_DETAIL = "body nests arrays or objects more than 64 levels deep"
MISSING_DETAIL = "missing required field(s): device_type, locale, app_version, ip, device_id"
TYPE_DETAIL = "device_type must be one of android, ios, web"
SOURCE_ID = "6d92078a-9c1d-4b1e-8f00-2b7c5e0d1a3f"


def etl_letter(reason: str, detail: str, event_id: str | None = None) -> DeadLetter:
    """A dead letter as the ETL writes it (SqsQueue.dead_letter): its own four attributes, and the event id if any."""
    return DeadLetter(
        message_id="2f0c7e4a-1111-4222-8333-444455556666",
        receipt_handle="r",
        reason=reason,
        detail=detail,
        event_id=event_id or SOURCE_ID,
        sent_timestamp_ms=1764790000000,
        sealed_body=None,
        key=None,
        note=None,
        raw_body="{}",
        producer_event_id=event_id,
    )


def names(given: Person, dead: DeadLetter) -> bool:
    """Whether `dead-letters erase` reads `dead`'s attributes as naming `given`."""
    event_id = dead.producer_event_id
    return event_id is not None and given.matches_event_id(event_id, body_read=False)


@pytest.mark.parametrize(
    ("line", "dead"),
    [
        ("user_id=0", etl_letter("not_json", NOT_JSON_DETAIL, "evt-a")),
        ("user_id=64", etl_letter("too_deep", TOO_DEEP_DETAIL, "evt-a")),
        ("user_id=field", etl_letter("missing_field", MISSING_DETAIL, "evt-a")),
        ("user_id=missing", etl_letter("missing_field", MISSING_DETAIL)),
        ("user_id=locale", etl_letter("missing_field", MISSING_DETAIL)),
        ("ip=7.0.0.1", etl_letter("missing_field", MISSING_DETAIL)),
        ("user_id=2026", etl_letter("bad_value", TYPE_DETAIL, "evt-2026-12-03-000042-17")),
        ("user_id=17", etl_letter("bad_value", TYPE_DETAIL, "evt-2026-12-03-000042-17")),
        ("user_id=000042", etl_letter("bad_value", TYPE_DETAIL, "evt-2026-12-03-000042-17")),
        ("user_id=9c1d", etl_letter("bad_value", TYPE_DETAIL)),  # groups of the source message id
        ("user_id=6d92078a", etl_letter("bad_value", TYPE_DETAIL)),
        ("ip=109.146.7.138", etl_letter("bad_value", TYPE_DETAIL)),  # 0x6d92078a
        ("user_id=2b7c5e0d1a3f", etl_letter("bad_value", TYPE_DETAIL)),
        ("device_id=web", etl_letter("bad_value", TYPE_DETAIL, "evt-a")),
        ("device_id=web", etl_letter("bad_value", TYPE_DETAIL, "login-web-17")),  # short: only the whole id
        ("device_id=2b7c5e0d1a3f", etl_letter("bad_value", TYPE_DETAIL)),
    ],
)
def test_the_etls_own_attributes_and_others_event_ids_name_nobody(line: str, dead: DeadLetter) -> None:
    assert not names(person(line + "\n"), dead)


@pytest.mark.parametrize(
    ("line", "dead"),
    [
        ("user_id=alice42", etl_letter("bad_value", TYPE_DETAIL, "login-alice42-17")),
        ("user_id=17", etl_letter("bad_value", TYPE_DETAIL, "17")),  # short: the whole event id
        ("device_id=web", etl_letter("bad_value", TYPE_DETAIL, "WEB")),
        (f"device_id={IDFV}", etl_letter("bad_value", TYPE_DETAIL, IDFV.upper())),
    ],
)
def test_the_event_id_the_etl_kept_names_the_person(line: str, dead: DeadLetter) -> None:
    assert names(person(line + "\n"), dead)


def test_a_redriven_originals_event_id_names_the_person() -> None:
    original = replace(etl_letter("x", ""), reason=None, detail="", event_id="login-alice42-17")
    original = replace(original, producer_event_id="login-alice42-17")
    assert names(person("user_id=alice42\n"), original)


# attack 14, finding 8: every version, decimal or price is some short `inet_aton` form (2-3 dotted
# numbers), and other people's letters were deleted on them although their bodies were read. On
# such a letter the body decides, as for whole numbers. (The first six ips are what these read as.)
SHORT_FORMS = [
    ("2.0.0.5", "evt-1a2b-build-2.5"),
    ("10.0.0.1", "login-10.0.1-abc"),
    ("17.1.0.2", "ios-17.1.2-evt-9"),
    ("3.12.0.1", "app-3.12.1-x"),
    ("88.7.0.123", "evt-88.7.123"),
    ("12.0.0.99", "price-12.99-e1"),
    (SPELLED_IP, "evt-203.0.28935"),
    (SPELLED_IP, "evt-203.28935"),
    (SPELLED_IP, "evt-0313.0.28935"),  # octal first part
    (SPELLED_IP, "v203.0.28935"),
]


@pytest.mark.parametrize(("ip", "event_id"), SHORT_FORMS)
def test_a_short_form_in_the_event_id_of_a_letter_whose_body_was_read_names_nobody(ip: str, event_id: str) -> None:
    assert not person(f"ip={ip}\n").matches_event_id(event_id, body_read=True)


@pytest.mark.parametrize(("ip", "event_id"), SHORT_FORMS)
def test_a_short_form_names_the_ip_when_the_event_id_is_all_there_is(ip: str, event_id: str) -> None:
    assert person(f"ip={ip}\n").matches_event_id(event_id, body_read=False)


@pytest.mark.parametrize(
    ("piece", "full"),
    [
        ("203.0.113.7", True),
        ("0313.0.0161.07", True),
        ("::ffff:cb00:7107", True),
        ("0xcb007107", True),
        ("203.0.0x7107", True),
        ("0xcb.28935", True),
        ("203.0.28935", False),
        ("2.5", False),
        ("3405803783", False),
        ("cb007107", False),
    ],
)
def test_full_ip_spellings_are_told_from_short_forms(piece: str, full: bool) -> None:
    assert full_ip_spelling(piece) is full


# attack 14, finding 6: schema drift (the usual cause of a missing_field letter) puts the user id
# under another key; with only the user id given, the person's letter was left.
@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"userId": USER, "ip": "192.0.2.9"}),
        json.dumps({"User_Id": USER}),
        json.dumps({"uid": USER}),
        json.dumps({"event": {"uid": [f" {USER} "]}}),
        json.dumps({"user_id": USER + "\u200b"}),  # a zero-width space
        json.dumps({"user_id": "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in USER)}),  # fullwidth
        json.dumps({"\uff55id": "erased-\u200buser-0154"}),  # NFKC and invisible characters on both sides
        '{"userId": "' + USER + '",}',  # not JSON: a quoted literal under another key
        f"userId={USER}&ip=192.0.2.9",  # not JSON: unquoted
        f"{{uid: {USER}, ip: 192.0.2.9",
        json.dumps({USER: {"ip": "192.0.2.9"}}),  # a key is a string too
    ],
)
def test_a_distinct_user_id_matches_under_any_key_in_nfkc_form(body: str) -> None:
    assert person(f"user_id={USER}\n").matches(body)


@pytest.mark.parametrize(
    ("user_id", "body"),
    [
        ("u-154", json.dumps({"uid": "u-154"})),  # short: only under user_id
        ("0154154", json.dumps({"n": "0154154"})),  # digits only
        ("2026-12-03", json.dumps({"create_date": "2026-12-03"})),  # no letter: a date
        ("10.2.345", '{"version": "10.2.345",}'),
        (USER, json.dumps({"uid": USER.upper()})),  # case kept: user ids may tell case
        (USER, json.dumps({"uid": f"{USER}x"})),
        (USER, json.dumps({"note": f"by {USER}"})),  # part of a string
        (USER, f"uid={USER}-2&x=1"),
        ("android", json.dumps({**json.loads(event()), "device_type": "android", "locale": "android"})),
        ("android", "device_type=android&locale: 'android'"),  # shared by many people
        ("locale", event(locale="en-US")),  # a key of every event: keys are strings too
        ("sealed_body", json.dumps({"format": "f", "sealed_body": "vault:v1:x", "key": "k", "note": None})),
    ],
)
def test_a_short_or_letterless_user_id_or_a_lookalike_does_not_match_under_other_keys(user_id: str, body: str) -> None:
    assert not person(f"user_id={user_id}\n").matches(body)


def test_a_short_user_id_still_matches_under_the_user_id_key_and_a_distinct_one_under_any_other() -> None:
    assert person("user_id=u-154\n").matches(json.dumps({"user_id": " u-154"}))
    assert person("user_id=android\n").matches(json.dumps({"uid": "android", "device_type": "ios"}))
    assert person("user_id=android\n").matches("uid=android&device_type=ios")
