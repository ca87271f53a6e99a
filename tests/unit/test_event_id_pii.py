"""The ETL's event_id PII check: bypass forms (attack round 7, Break 2), the event's own values, the fast pre-filter."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import uuid
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from etl_service.domain.messages import check_event_id
from etl_service.domain.own_values import MIN_DEVICE_ID_TO_SEARCH, own_value_in
from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tokenvault_common.pii_text import address_in, may_hold_an_address, undefanged, visible

BYPASSES = [  # each passed check_event_id before
    "login.203.0.113.7.T7",  # a dot before the first octet
    "a.203.0.113.7",
    "id.198.51.100.23.T7",
    "T7 203 0 113 9",  # blanks between octets
    "203....0....113....7",
    "alice%40example.com-T7",  # percent-encoded e-mail
    "alice@example.\u0440\u0444",  # a non-ASCII top-level domain
    "mac.00.00.5e.00.53.01.T7",  # dotted MAC
    "aa.bb.cc.dd.ee.ff",
    "aa bb cc dd ee ff",
    "dev-aabb:ccdd:eeff",
]


SHORT_FORMS = [  # review A, finding 2: the vault's purposes refused these, the ETL's event ids did not
    "evt-203.0.29447",  # 203.0.113.7 to inet_aton, ping and browsers
    "evt-203.29447",  # 203.0.115.7
    "evt_203.0.29447.T7",
]


INET_ATON_FORMS = [  # attack 10, finding 2: each passed check_event_id; all are 203.0.115.7 or 203.0.113.7 to inet_aton
    "evt-203.0.0x7307",  # a hex last part
    "evt-203.0X7307",
    "evt-0xcb.0.29447",  # a hex first part
    "evt-0XCB.29447",
    "evt-0313.0.29447",  # an octal first part
    "evt-0313.29447",
    "evt-203.0000.29447",  # a zero-padded middle part
    "evt-0203.0.29447",  # 131.0.115.7
    "evt203.0.29447",  # glued to a letter
    "ip203.29447",
    "evt-203.0.29447x",
    "evt-0xcb.0.113.7",  # four parts, hex or octal (the strict reading took only decimal octets)
    "evt-203.0.0161.7",
    "evt-0313.0.0161.07",
]


@pytest.mark.parametrize("raw", SHORT_FORMS + INET_ATON_FORMS)
def test_event_ids_holding_an_inet_aton_short_form_are_refused_by_the_shared_detector(raw: str) -> None:
    event_id, problem = check_event_id(raw)
    assert event_id is None and problem is not None and "IP address" in problem and "203" not in problem
    assert address_in(undefanged(raw), broad=True) == address_in(undefanged(raw), broad=False) is not None


def test_dotted_numbers_are_refused_only_when_inet_aton_reads_their_last_part_above_255() -> None:
    # Decided knowingly (tokenvault_common.pii_text, _SHORT_DOTTED_NUMBER): `release-1.2.345` is
    # 1.2.1.89 to inet_aton as surely as evt-203.0.29447 is 203.0.113.7, so it is refused too.
    for raw in ("release-1.2.3", "release-10.2", "evt-2026.12.03", "v1.2.345", "evt-1.2.345.6", "evt-0.12345"):
        assert check_event_id(raw) == (raw, None), raw
    assert check_event_id("release-1.2.345")[0] is None
    for raw in ("release-v1.2.345", "build-V10.0.19045", "evt-1.02.3", "app-10.05.30", "release-1.2.3-rc1"):
        assert check_event_id(raw) == (raw, None), raw  # versions: a lone v, or parts that read the same in octal


@pytest.mark.parametrize(
    "raw",
    [  # attack 11, finding 5: each was accepted, a "lone" v exempting any dotted form after it
        "evt_V0313.0.0161.07",  # 203.0.113.7: four parts, octal
        "evt-V203.0.0113.7",  # 203.0.75.7: four parts
        "v0313.28935",  # 203.0.113.7: an octal part
        "build9v203.0.28935",  # 203.0.113.7: the v follows a digit
        "evt-v0203.0.28935",  # 131.0.113.7 (0203 is octal): a leading zero
    ],
)
def test_a_v_before_a_dotted_number_exempts_only_two_or_three_plain_decimal_parts(raw: str) -> None:
    event_id, problem = check_event_id(raw)
    assert event_id is None and problem is not None and "IP address" in problem and "203" not in problem


def test_versions_after_a_lone_v_still_pass() -> None:
    for raw in ("v1.2.345", "release-v1.2.345", "build-V10.0.19045", "evt_v2.10.300", "v1.02.3", "app.v10.0.19045"):
        assert check_event_id(raw) == (raw, None), raw


@pytest.mark.parametrize("form", ["203.0.0x7307", "0xcb.29447", "0313.0.29447", "203.0.29447", "0xcb.0.113.7"])
@pytest.mark.parametrize("event_id", ["evt-{}", "evt{}", "v{}", "id.{}.T7"])
def test_an_event_id_holding_its_own_ip_in_a_dotted_inet_aton_form_is_refused(form: str, event_id: str) -> None:
    # attack 10, finding 2: own_value_in returned None for evt-203.0.0x7307 and ip 203.0.115.7;
    # after a lone `v` the shared detector takes a dotted number for a version, its own ip still counts
    ip = "203.0.113.7" if "113" in form else "203.0.115.7"
    problem = own_value_in(event_id.format(form), ip=ip, device_id="")
    assert problem is not None and "own ip" in problem and "203" not in problem


@pytest.mark.parametrize("raw", BYPASSES)
def test_event_ids_of_the_bypass_forms_are_refused_without_quoting_them(raw: str) -> None:
    event_id, problem = check_event_id(raw)
    assert event_id is None and problem is not None and "opaque" in problem
    assert raw not in problem and "203" not in problem and "alice" not in problem


OPAQUE = [
    "4ba2b6b0-2c37-4c35-b1a3-0a9d3d1f6e2b",
    "4BA2B6B02C374C35B1A30A9D3D1F6E2B",
    "01HF7YQ2ZK8X3N5V6W7T9R0ABC",  # ULID
    "gen-42-5000-0000012",  # devstack.events
    "gen-4123456789-300-0000012",
    "file-0123456789abcdef-0000007",
    "order-evt-000042",
    "evt-20261203-000042",
    "1701600000000-7",
    "evt_000042",
]


@pytest.mark.parametrize("raw", OPAQUE)
def test_the_usual_opaque_ids_are_usable_and_take_the_fast_path(raw: str) -> None:
    assert check_event_id(raw) == (raw, None)
    assert not may_hold_an_address(raw)


@given(st.uuids())
def test_no_uuid_is_even_suspect(value: uuid.UUID) -> None:
    for spelled in (str(value), value.hex, str(value).upper()):
        assert not may_hold_an_address(spelled)


# Texts built from the pieces addresses are made of, so the detector often fires.
_SEPARATORS = ["-", "_", "--", "__", "-_", ".", ":", " ", "@", "%40", "0x", "0X", "[at]", "2026-12-03", "12-03"]
_GROUPS = ["0", "7", "00", "42", "113", "203", "255", "256", "999", "1000", "a", "ff", "5e", "db8", "2001", "abcd"]
_PIECES = st.sampled_from(
    [*_SEPARATORS, *_GROUPS, "cb00", "b6b0", "evt", "x", "T7", "\uff11", "\u200d", "\u0440\u0444"]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=16).map("".join))
@example("1-2-2026-12-03-3-4")  # a date blanked out joins octets around it
@example("a-b-2026-12-03-c")  # ... or IPv6 groups
@example("2001-db8--1")
@example("2001_db8_0_0_0_0_0_1")
@example("00-00-5e-00-53-01")
@example("00_00_5e_00_53_01")
@example("203_0_113_7")
@example("dev-0xcb007107")
def test_the_pre_filter_finds_every_text_the_strict_detector_refuses(text: str) -> None:
    if address_in(undefanged(text), broad=False) is not None:
        assert may_hold_an_address(text)


_ALNUM_DASH_PIECES = st.sampled_from(["-", "_", "--", *_GROUPS, "cb00", "evt", "2026-12-03", "0x"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_ALNUM_DASH_PIECES, min_size=1, max_size=16).map("".join))
def test_the_pre_filter_is_sound_on_the_ids_it_lets_through_letters_digits_dashes_underscores(text: str) -> None:
    """The texts the pre-filter may pass are of this alphabet; about a third of these are refused."""
    if address_in(undefanged(text), broad=False) is not None:
        assert may_hold_an_address(text)


@pytest.mark.parametrize("raw", [*BYPASSES, "login-203.0.113.201-1", "evt-2001-db8--7", "dev-00-00-5E-00-53-01"])
def test_every_refused_example_is_suspect(raw: str) -> None:
    assert may_hold_an_address(raw)


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_visible_leaves_ascii_as_the_full_normalization_would(text: str) -> None:
    slow = "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) not in {"Mn", "Me", "Cf"})
    assert visible(text) == slow


IP = "203.0.113.7"
DEVICE = "6D92078A-8246-4BA4-AE5B-76104861E7DC"  # an iOS IDFV is a UUID


@pytest.mark.parametrize(
    ("event_id", "field"),
    [
        ("ip-3405803783-T7", "ip"),  # 203.0.113.7 as an integer
        ("ip-003405803783", "ip"),
        ("ip-cb007107", "ip"),  # ... as hex
        ("IP-CB007107-x", "ip"),
        ("ip-34058037831", "ip"),  # inside a longer run of digits: a window of it (review 12, finding 2)
        ("ip-acb007107", "ip"),  # ... of hex digits: a neighbouring a-f letter does not hide it
        ("login.203.0.113.7.T7", "ip"),
        (f"{DEVICE}.T7", "device_id"),
        (f"{DEVICE.lower()}-1", "device_id"),
        (f"evt-{DEVICE.replace('-', '')}", "device_id"),
    ],
)
def test_an_event_id_holding_the_events_own_ip_or_device_id_is_found(event_id: str, field: str) -> None:
    problem = own_value_in(event_id, IP, DEVICE)
    assert problem is not None and problem.endswith(f"own {field}")
    assert IP not in problem and DEVICE not in problem


def test_the_own_ip_is_found_in_ipv6_forms_too() -> None:
    ip = "2001:db8::7"
    number = int(ipaddress.ip_address(ip))
    for event_id in (f"e-{number}", f"e-{number:x}", "e-2001:0db8:0000:0000:0000:0000:0000:0007", "e-2001:DB8::7"):
        assert own_value_in(event_id, ip, "dev-1") is not None


@pytest.mark.parametrize("event_id", [*OPAQUE, "ip-34058037-831", "ip-acb00710-7"])
def test_opaque_ids_do_not_hold_the_events_own_values(event_id: str) -> None:
    assert own_value_in(event_id, IP, "att7-dev-7f3a") is None
    assert own_value_in(event_id, "10.0.0.1", "100-00-0001") is None


def test_a_short_device_id_is_found_only_as_a_whole_group() -> None:
    assert own_value_in("evt-a1-000042", IP, "a1") is not None
    assert own_value_in("evt-ba1c-000042", IP, "a1") is None


def short_device_id_by_pattern(event_id: str, device_id: str) -> bool:
    """The short device id search as it was: a pattern compiled per call (the reference)."""
    device = device_id.strip().casefold()
    return bool(device) and re.search(rf"(?<![0-9a-z]){re.escape(device)}(?![0-9a-z])", event_id.casefold()) is not None


_NEAR = "aZ1z0-_. \t[]*ßİ"
"""Characters around and inside short ids: letters at both ends of [0-9a-z], digits, separators,
regex metacharacters, and characters whose case folding changes their length."""
_short_ids = st.text(alphabet=_NEAR, min_size=1, max_size=3)
_ids_around = st.one_of(
    st.text(alphabet=_NEAR, max_size=30),
    st.text(max_size=30),
    st.tuples(st.text(alphabet=_NEAR, max_size=8), _short_ids, st.text(alphabet=_NEAR, max_size=8)).map("".join),
)


@settings(max_examples=1500, deadline=None)
@given(event_id=_ids_around, device_id=_short_ids)
@example(event_id="evt-a1-000042", device_id="a1")
@example(event_id="evt-ba1c-000042", device_id="a1")
@example(event_id="x-[*]-y", device_id="[*]")
@example(event_id="xa1-a1", device_id="a1")  # the first occurrence is not bounded, the second is
@example(event_id="aa1a1", device_id="a1")  # neither is
def test_a_short_device_id_is_found_exactly_where_the_pattern_found_it(event_id: str, device_id: str) -> None:
    if len(device_id.strip().casefold()) >= MIN_DEVICE_ID_TO_SEARCH:
        return  # folding made it long (ß -> ss): not the short search
    found = own_value_in(event_id, "not an ip", device_id) is not None
    assert found == short_device_id_by_pattern(event_id, device_id)


@pytest.mark.parametrize("form", ["3405803783", "cb007107", "203.0.113.7"])
def test_an_event_id_holding_its_own_ip_is_quarantined_under_the_message_id_and_stored_nowhere(form: str) -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    event_id = f"ip-{form}-T7"
    bad = message(1, good(1, ip=IP), event_id=check_event_id(event_id)[0])
    if bad.event_id is None:  # the dotted form is refused by pattern already
        bad = replace(bad, event_id_problem=check_event_id(event_id)[1])
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process([bad, message(2, good(2), event_id="evt-2")])
    assert (outcome.loaded, outcome.reasons) == (1, {"invalid_event_id": 1})
    assert store.quarantine["m1"].event_id == "m1"
    assert store.quarantine["m1"].reason == "invalid_event_id"
    seen = repr(store.quarantine) + repr(store.rows) + repr(queue.dead_letter_bodies) + repr(queue.dead_lettered)
    assert form not in seen and not re.search(r"203\.0\.113\.7", seen)


def test_the_own_device_id_is_quarantined_too() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    body = {**good(1), "device_id": DEVICE}
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process([message(1, body, event_id=f"{DEVICE}.T7")])
    assert (outcome.loaded, outcome.reasons) == (0, {"invalid_event_id": 1})
    assert store.quarantine["m1"].event_id == "m1" and "device_id" in store.quarantine["m1"].detail
    assert DEVICE not in repr(store.quarantine) + repr(queue.dead_lettered)


def _spellings_of(address: str) -> list[str]:
    """Spellings of an IPv4 address a reader takes for it, in the shapes `ip_forms` looks for."""
    packed = ipaddress.IPv4Address(address).packed
    number = int.from_bytes(packed, "big")
    octets = [f"{o:x}" for o in packed]
    return [
        address,
        str(number),
        f"{number:x}",
        f"{number:X}",
        "-".join(octets),
        ".".join(f"{o:02x}" for o in packed),
        f"{number:08x}"[:4] + "_" + f"{number:08x}"[4:],
        f"{packed[0]}.{int.from_bytes(packed[1:], 'big')}",
        f"0x{packed[0]:x}.{packed[1]}.{packed[2]}.{packed[3]}",
    ]


@settings(max_examples=400, deadline=None)
@given(
    ip=st.ip_addresses(v=4).map(str),
    other=st.ip_addresses(v=4).map(str),
    pick=st.integers(0, 8),
    own=st.booleans(),
    around=st.sampled_from(["evt-{}", "{}", "x{}y", "INC-{}-7", "{}.1", "v{}", "{}-" + "0" * 8]),
    noise=st.text("0123456789abcdef-._xv", max_size=24),
)
@example(ip="203.0.113.7", other="10.0.0.1", pick=4, own=True, around="INC-{}-7", noise="")
@example(ip="1.2.3.4", other="10.0.0.1", pick=0, own=False, around="{}", noise="01-02-03-04")
def test_a_canonical_ipv4_is_looked_for_as_the_general_path_looks_for_it(
    ip: str, other: str, pick: int, own: bool, around: str, noise: str
) -> None:
    """The canonical-IPv4 path (spellings made as needed) decides as the general one (`ip_forms`) on every id."""
    from etl_service.domain import own_values

    spelled = _spellings_of(ip if own else other)[pick]
    for event_id in (
        around.format(spelled),
        noise,
        noise + around.format(spelled),
        str(uuid.UUID(int=hash(noise) % 2**128)),
    ):
        folded = event_id.casefold()
        assert own_values._holds_canonical_ipv4(folded, ip) == own_values._holds_any_ip(folded, ip), event_id
