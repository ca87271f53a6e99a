"""Message validation: every malformed class gets its reason; app_version stays lossless."""

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl_service.domain.app_version import InvalidAppVersion, decode_app_version, encode_app_version
from etl_service.domain.validation import Rejection, parse_login_event

REPO = Path(__file__).resolve().parents[2]
GOOD = {
    "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": "199.172.111.135",
    "locale": "RU",
    "device_id": "593-47-5928",
}


def body(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


def test_good_event_parses_with_its_encoded_version() -> None:
    event = parse_login_event(body())
    assert (event.ip, event.device_id, event.app_version, event.app_version_number) == (
        "199.172.111.135",
        "593-47-5928",
        "2.3.0",
        2_003_000,
    )


def test_exercise_sample_has_99_valid_events_and_one_missing_fields() -> None:
    records = json.loads((REPO / "examples" / "sample_data.json").read_text())
    reasons = []
    for record in records:
        try:
            parse_login_event(json.dumps(record))
        except Rejection as rejection:
            reasons.append(rejection.reason)
    assert reasons == ["missing_field"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json at all", "not_json"),
        ("[1, 2]", "not_an_object"),
        ('"a string"', "not_an_object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "ip"}), "missing_field"),
        (body(ip=12345), "wrong_type"),
        (body(user_id=""), "empty_field"),
        (body(user_id="u" * 129), "field_too_long"),
        (body(ip="999.1.1.1"), "invalid_ip"),
        (body(device_type="toaster"), "unknown_device_type"),
        (body(locale="not a locale!"), "invalid_locale"),
        (body(app_version="v2-beta"), "invalid_app_version"),
        (body(app_version="1.2.3.4"), "invalid_app_version"),
        (body(device_id=None), "null_field"),
        ('{"ip": "1.1.1.1", "ip": "2.2.2.2"}', "duplicate_key"),
        (body(user_id="x" * 20_000), "body_too_large"),
        (b"\xff\xfe not utf-8", "invalid_utf8"),
        (body(device_id="593-47\u0000-5928"), "control_character"),
        (body(user_id="abc\u200bdef"), "control_character"),
    ],
)
def test_each_malformed_class_is_rejected_with_its_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(Rejection) as error:
        parse_login_event(raw)
    assert error.value.reason == reason
    assert "199.172.111.135" not in error.value.detail and "593-47-5928" not in error.value.detail


def test_null_locale_is_allowed_and_unknown_fields_are_ignored() -> None:
    event = parse_login_event(body(locale=None, extra_field="whatever"))
    assert event.locale is None and not hasattr(event, "extra_field")


def test_repr_of_an_event_never_shows_pii() -> None:
    text = repr(parse_login_event(body()))
    assert "199.172.111.135" not in text and "593-47-5928" not in text


@pytest.mark.parametrize(
    ("text", "number"), [("2.3.0", 2_003_000), ("0.96", 96_000), ("2", 2_000_000), ("999.999.999", 999_999_999)]
)
def test_app_version_encoding(text: str, number: int) -> None:
    assert encode_app_version(text) == number


def test_versions_that_naive_encodings_confuse_stay_distinct() -> None:
    assert len({encode_app_version(v) for v in ("0.2.4", "0.24", "2.4")}) == 3


@pytest.mark.parametrize("text", ["", "1.", ".1", "1.2.3.4", "1000.0", "a.b", "-1.0", "1.2a"])
def test_invalid_app_versions(text: str) -> None:
    with pytest.raises(InvalidAppVersion):
        encode_app_version(text)


versions = st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999))


@given(versions, versions)
def test_app_version_encoding_preserves_order(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    ea, eb = encode_app_version("{}.{}.{}".format(*a)), encode_app_version("{}.{}.{}".format(*b))
    assert (ea < eb) == (a < b) and (ea == eb) == (a == b)
    assert ea < 2**31  # fits the exercise's integer column


@given(versions)
def test_app_version_round_trips(v: tuple[int, int, int]) -> None:
    assert decode_app_version(encode_app_version("{}.{}.{}".format(*v))) == "{}.{}.{}".format(*v)


@given(st.text(max_size=200))
def test_validation_never_raises_anything_but_rejection(raw: str) -> None:
    with contextlib.suppress(Rejection):
        parse_login_event(raw)
