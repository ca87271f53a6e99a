"""Message validation: every malformed class gets its reason; app_version stays lossless."""

import contextlib
import ipaddress
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from etl_service.domain.app_version import InvalidAppVersion, decode_app_version, encode_app_version
from etl_service.domain.validation import Rejection, parse_login_event
from tests.malformed_samples import GOOD, MALFORMED, body

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(("raw", "reason"), MALFORMED)
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


valid_events = st.fixed_dictionaries(
    {
        "user_id": st.text(st.characters(categories=("L", "N")), min_size=1, max_size=128),
        "app_version": versions.map(lambda v: "{}.{}.{}".format(*v)),
        "device_type": st.sampled_from(["android", "ios", "IOS"]),
        "ip": st.ip_addresses().map(str),
        "locale": st.none() | st.sampled_from(["US", "en-US", "pt_BR", "zh-Hant-TW"]),
        "device_id": st.from_regex(r"\A[0-9]{3}-[0-9]{2}-[0-9]{4}\Z"),
    }
)


@given(valid_events, st.dictionaries(st.text(min_size=1, max_size=10), st.integers(), max_size=3))
def test_every_valid_event_parses_and_extra_fields_change_nothing(
    event: dict[str, object], extra: dict[str, int]
) -> None:
    parsed = parse_login_event(json.dumps(event))
    assert (parsed.ip, parsed.device_id, parsed.app_version) == (event["ip"], event["device_id"], event["app_version"])
    assert parsed.device_type == str(event["device_type"]).lower()
    with_extra = {**{k: v for k, v in extra.items() if k not in event}, **event}
    assert parse_login_event(json.dumps(with_extra)) == parsed


@given(valid_events, st.sampled_from(sorted(set(GOOD) - {"locale"})))
def test_a_required_field_removed_from_any_valid_event_is_missing_field(event: dict[str, object], name: str) -> None:
    with pytest.raises(Rejection) as error:
        parse_login_event(json.dumps({k: v for k, v in event.items() if k != name}))
    assert error.value.reason == "missing_field" and name in error.value.detail


@given(st.text(max_size=40) | st.ip_addresses().map(str) | st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4}){3}\Z"))
def test_the_ip_fast_path_agrees_with_the_ipaddress_module(ip: str) -> None:
    try:
        ipaddress.ip_address(ip.strip())
        expected = "invalid_ip" if "%" in ip else None  # zone ids are refused (tokenvault_common.values)
    except ValueError:
        expected = "invalid_ip"
    try:
        parse_login_event(body(ip=ip))
        got = None
    except Rejection as error:
        got = error.reason if error.reason == "invalid_ip" else "other"
    if got != "other":
        assert got == expected


@given(st.text(min_size=1, max_size=30))
def test_the_printable_fast_path_refuses_exactly_the_refused_categories(text: str) -> None:
    assume(text.strip())  # blank values are refused earlier, as empty
    refused = any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)
    try:
        parse_login_event(body(user_id=text))
        got = None
    except Rejection as error:
        got = error.reason
    if refused:
        assert got == "control_character"
    else:
        assert got != "control_character"


def odd_but_good(**extra: str) -> str:
    """GOOD plus unknown fields spliced in as raw JSON text."""
    return body()[:-1] + "".join(f", {json.dumps(k)}: {v}" for k, v in extra.items()) + "}"


def test_a_good_event_with_odd_unknown_fields_loads() -> None:
    raw = odd_but_good(
        nested="[" * 30 + "]" * 30,  # within the depth bound
        big="9" * 4300,  # the largest integer literal accepted
        huge_float="1e400",
        text=json.dumps("\u3000\u00a0\u0000\ud800 text"),
        brackets=json.dumps("[" * 500),  # brackets inside a string are not nesting
        nothing="null",
    )
    event = parse_login_event(raw)
    assert (event.ip, event.device_id) == ("199.172.111.135", "593-47-5928")


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5), lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c)
    )
)
def test_extra_fields_of_any_shape_within_bounds_never_stop_a_good_event(extra: object) -> None:
    try:
        raw = body(extra_field=extra)
    except ValueError:
        return
    try:
        event = parse_login_event(raw)
    except Rejection as error:
        assert error.reason in ("too_deep", "body_too_large")
    else:
        assert event.device_id == "593-47-5928"


def test_nesting_deeper_than_the_recursion_limit_is_a_reason_not_an_exception() -> None:
    with pytest.raises(Rejection) as error:
        parse_login_event(odd_but_good(deep="[" * 3000 + "]" * 3000), max_bytes=20_000)
    assert error.value.reason == "too_deep"


def test_a_repeated_unknown_key_is_not_named_in_the_detail() -> None:
    with pytest.raises(Rejection) as error:
        parse_login_event(odd_but_good(**{"593-47-5928": "1"})[:-1] + ', "593-47-5928": 2}')
    assert error.value.reason == "duplicate_key" and "593" not in error.value.detail
