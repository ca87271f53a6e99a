"""The fields stored in clear (user_id, locale, app_version) never hold the event's own ip or device id (attack 23, F1).

The event_id's own-value check, the same spellings: a producer keying anonymous users by their
address or device id put them in clear in user_logins, where every analyst reads them and no
erasure reaches them. Synthetic values only (TEST-NET addresses, SYNTH device ids).
"""

from __future__ import annotations

import pytest

from etl_service.domain.validation import REASONS, Reason, Rejection, parse_login_event
from tests.malformed_samples import body

IP = "192.0.2.201"  # 3221226185, c00002c9
DEVICE = "SYNTH-555-12-9877"
UUID_DEVICE = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


def _refused(event_id: str | None = None, **fields: object) -> Rejection:
    with pytest.raises(Rejection) as error:
        parse_login_event(body(**{"ip": IP, "device_id": DEVICE, **fields}), event_id=event_id)
    return error.value


@pytest.mark.parametrize(
    ("field", "value", "held"),
    [
        ("user_id", f"user-{IP}", "ip"),  # attack 23's examples
        ("user_id", DEVICE, "device_id"),
        ("user_id", f"{IP}|{DEVICE}", "ip"),
        ("locale", f"en-{DEVICE}", "device_id"),  # passes the locale grammar
        ("user_id", "anon-3221226185", "ip"),  # as a decimal integer
        ("user_id", "anon-C00002C9", "ip"),  # as hex
        ("user_id", "anon-0xc00002c9", "ip"),
        ("user_id", "INC-C0-00-02-C9", "ip"),  # hex octets
        ("user_id", "anon-c000-02c9", "ip"),  # hex halves
        ("user_id", "u-192.0.0x2c9", "ip"),  # a dotted form inet_aton reads
        ("user_id", "u-0300.0.2.0311", "ip"),
        ("user_id", f"anon-{DEVICE.lower()}", "device_id"),  # any case
    ],
)
def test_a_clear_field_holding_its_own_ip_or_device_id_is_refused_naming_the_field_never_the_value(
    field: str, value: str, held: str
) -> None:
    rejection = _refused(**{field: value})
    assert rejection.reason == Reason.OWN_VALUE_IN_FIELD == "own_value_in_field"
    assert f"'{field}'" in rejection.detail and f"own {held}" in rejection.detail
    assert value not in str(rejection) and IP not in str(rejection) and DEVICE not in str(rejection)


def test_a_long_device_id_without_its_separators_and_an_app_version_inet_aton_reads_as_the_ip_are_refused() -> None:
    compact = UUID_DEVICE.replace("-", "").lower()
    assert _refused(device_id=UUID_DEVICE, user_id=f"dev-{compact}").detail.startswith("field(s) 'user_id'")
    # 192.0.201 is 192.0.0.201 to inet_aton; app_version's parts have at most 3 digits.
    assert "'app_version'" in _refused(ip="192.0.0.201", app_version="192.0.201").detail


def test_a_value_split_across_user_id_and_locale_names_both() -> None:
    device = "SYNTHABCDEFGHJK2"  # its compact form, 16 characters, split between user_id and locale
    rejection = _refused(device_id=device, user_id="u-synthabcd", locale="ef-ghjk2")
    assert rejection.detail.startswith("field(s) 'user_id', 'locale' ")


@pytest.mark.parametrize(
    "fields",
    [
        {},  # the usual event
        {"user_id": "user-192.0.2.202", "locale": "en-SYNTH-555-12-9876"},  # another ip, another device id
        {"user_id": "3221226186", "locale": None},
        {"app_version": "192.0.2"},  # 192.0.0.2 to inet_aton: not this event's ip
    ],
)
def test_fields_holding_other_values_are_loaded(fields: dict[str, object]) -> None:
    event = parse_login_event(body(**{"ip": IP, "device_id": DEVICE, **fields}))
    assert event.ip == IP


def test_the_reason_is_a_known_one() -> None:
    assert Reason.OWN_VALUE_IN_FIELD in REASONS


def test_an_event_id_holding_its_own_value_is_refused_as_before_and_a_short_device_id_refuses_no_field() -> None:
    rejection = _refused(event_id=f"evt-{IP}", user_id=f"user-{IP}")  # the id's reason first, as before
    assert rejection.reason == Reason.INVALID_EVENT_ID and "event_id attribute" in rejection.detail
    # A 1-3 character device id is found in an id only as a whole group; in a field, it is no one's.
    assert parse_login_event(body(device_id="ru", locale="ru", user_id="u-ru"), event_id="evt-1").locale == "ru"
    assert _refused(device_id="ru", event_id="evt-ru").reason == Reason.INVALID_EVENT_ID
