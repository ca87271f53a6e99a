"""A stored-value hit finds its groups in what the walk recorded: the same groups as before, at the cost of a miss.

Review 18, R18-8: since da1ea89 a hit walked the purpose's runs a second time (`groups_reading_as`,
5-56 µs on the first call of each distinct purpose, which the caller picks) where a miss did
nothing more, a timing difference on the existence oracle the lookup is built to close. Now the
walk records, for each candidate, the groups of every run read as it, and a hit is a dict lookup.
`_walked_again` is that second walk as it was (frozen copy): the recorded groups must equal it
for every candidate of every purpose of the span tests and of a broad generated set.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable
from types import FrameType

import pytest

from tests.unit.fakes import FakeTokenStore
from tests.unit.purpose_vaults import DEVICE, vault_with_two_tokens
from tokenvault_common.ip_spellings import ips_spelled_by
from vault_service.domain.purpose import groups_reading_as, stored_candidates
from vault_service.domain.purpose_runs import IP_CANDIDATE_GROUPS, group_runs
from vault_service.domain.purpose_shape import REFERENCE_SEPARATORS, SEGMENT_SEPARATORS
from vault_service.domain.purpose_tokens import may_hold_a_token, token_ids_in
from vault_service.service.stored_values import StoredValueLookup


def _walked_again(purpose: str, device_ids: Iterable[str], ips: Iterable[str]) -> frozenset[int]:
    """`purpose_spellings.groups_reading_as` as of 5cae945, before R18-8 (frozen copy: the reference)."""
    wanted_devices, wanted_ips = frozenset(device_ids), frozenset(ips)
    pieces = SEGMENT_SEPARATORS.split(purpose)
    groups, joins = pieces[0::2], pieces[1::2]
    found: set[int] = set()
    for first in range(len(groups)):
        run = compact = groups[first]
        ip_joined = True
        for last in range(first, len(groups)):
            if last > first:
                run = f"{run}{joins[last - 1]}{groups[last]}"
                compact = f"{compact}{groups[last]}"
                ip_joined = ip_joined and joins[last - 1] in ".:"
            readings = (run, compact, run.upper(), compact.upper(), run.casefold(), compact.casefold())
            named = not wanted_devices.isdisjoint(readings)
            if not named and wanted_ips and ip_joined and last - first + 1 >= IP_CANDIDATE_GROUPS:
                named = not wanted_ips.isdisjoint(ips_spelled_by(run.casefold()))
            if named:
                found.update(range(first, last + 1))
    return frozenset(found)


OF_THE_SPAN_TESTS = [
    "INC-2026Q3-0001",
    "GDPR-2026-801-SM-G991B-QWERTYUI",
    "GDPR-2026-801-Sm-G991b-QwertyUI",
    "INC-SM-G991B-QWERTYUI-7",
    "A1B2C3D4/X-E5F6G7H8:step-2",
    "INC-SM-G991B-QWERTYUI",
    "INC-X-1.2.3.4",
    f"INC-{DEVICE}-REF-AB12CD34EF-2",
    "INC-2026Q3-SM-G991B",
    "INC-2026-PIXEL-7A-GXASWE",
    "REL-2026.12.04-ABCD-X7Y8",
    "GDPR-12-4A5B-QWERTY",
    "K2L-BC-DE-FG-HI-J3K-NO-QR-TU-WX-Z4Y-MN-PQ-RS",
    "INC-1.2.3.4.5",
    "INC-2001:DB8:0:0:0:0:0:1",
    "INC-0:0:0:0:0:FFFF:10.1.2.3",
    "INC-smg991b-atk8q7zx-X",
    # A run without a serial group reading as a serial one's candidate, and one run in two cases.
    "INC2026-Q3-X-INC2026Q3",
    "Ab12cd34-x-AB12CD34-ab12cd34",
    "SM-G991B-X-SMG991B-sm_g991b",
    *(separator.join(["INC", "2026", "SM", "G991B", "QWERTYUI", "x", "7"]) for separator in REFERENCE_SEPARATORS),
]
_GROUPS = ["INC", "inc", "2026", "Q3", "2026Q3", "INC2026", "INC2026Q3", "SM", "sm", "G991B", "g991b", "QWERTYUI"]
_GROUPS += ["7A", "1b", "A1B2", "a1b2", "C3D4", "X", "0042", "cb", "00", "71", "7", "10", "1", "ff", "db8", "0"]
_COLLIDING = ["INC2026", "Q3", "INC2026Q3", "inc2026q3", "AB12", "CD34", "AB12CD34", "ab12cd34", "Ab12Cd34", "X"]
"""Serial groups with the word-and-number pieces they split into, in several cases: runs reading alike."""


def _generated(count: int) -> list[str]:
    """Reference-form purposes of 2-12 groups, seeded: half of a broad mix, half of groups that collide."""
    draw = random.Random(18_8)
    purposes = []
    for n in range(count):
        groups = ["INC", *draw.choices(_GROUPS if n % 2 else _COLLIDING, k=draw.randint(1, 11))]
        joins = draw.choices(REFERENCE_SEPARATORS + "..::--", k=len(groups) - 1)
        purposes.append(groups[0] + "".join(join + group for join, group in zip(joins, groups[1:], strict=True)))
    return purposes


@pytest.mark.parametrize("purposes", [OF_THE_SPAN_TESTS, _generated(300)], ids=["span-tests", "generated"])
def test_the_recorded_groups_are_those_the_second_walk_found(purposes: list[str]) -> None:
    draw = random.Random(8)
    compared = 0
    for purpose in purposes:
        candidates = stored_candidates(purpose)
        devices, ips = sorted(candidates.device_ids), sorted(candidates.ips)
        asks: list[tuple[list[str], list[str]]] = [
            ([device], []) for device in draw.sample(devices, min(12, len(devices)))
        ]
        asks += [([], [ip]) for ip in ips]
        asks += [(draw.sample(devices, min(3, len(devices))), draw.sample(ips, min(2, len(ips)))) for _ in range(3)]
        for wanted_devices, wanted_ips in asks:
            expected = _walked_again(purpose, wanted_devices, wanted_ips)
            assert groups_reading_as(purpose, wanted_devices, wanted_ips) == expected, (purpose, wanted_devices)
            compared += 1
    assert compared > len(purposes)  # candidates were read, not only empty asks


def _first_lookup_counted(lookup: StoredValueLookup, purpose: str) -> tuple[int, frozenset[int]]:
    """The groups a first lookup of `purpose` withholds, and the calls (Python and C) vault_service code made."""
    for cached in (group_runs, token_ids_in, may_hold_a_token):
        cached.cache_clear()
    events = 0

    def count(frame: FrameType, event: str, _: object) -> None:
        nonlocal events
        if event in ("call", "c_call") and "/vault_service/" in frame.f_code.co_filename:
            events += 1

    sys.setprofile(count)
    try:
        withheld = lookup.groups_naming_stored_values(purpose)
    finally:
        sys.setprofile(None)
    return events, withheld


def test_a_first_lookup_does_the_same_work_found_or_not() -> None:
    # Same purpose (14 groups), same candidates and fingerprints; one store holds the device, one
    # does not. Counted, not timed: before, the hit added a walk of every run (hundreds of calls).
    vault, _, _, _, _ = vault_with_two_tokens()
    purpose = f"INC-A-B-C-D-E-F-G-H-J-K-{DEVICE}"
    hit, withheld = _first_lookup_counted(vault.stored_values, purpose)
    assert withheld == {11, 12, 13}
    miss, withheld = _first_lookup_counted(StoredValueLookup(FakeTokenStore(), vault._keys), purpose)
    assert withheld == frozenset()
    assert hit - miss <= 4, (hit, miss)
