"""The runs of whole groups of a reference-form purpose: what each spells, and what of another call it could name.

One walk per distinct purpose (`group_runs`, cached) serves the spellings compared with the call's
own values (`purpose_spellings.values_spelled_by`, case-folded), the candidates looked up among
the stored values (`stored_candidates`, as written) and the shape rule of an Erase
(`shaped_as_a_stored_value`) alike (review 15, finding 9). It also records, for each candidate,
the groups of every run read as it, so a stored-value hit finds the groups to withhold by a dict
lookup (`StoredCandidates.groups_reading_as`), at the cost of a miss: a second walk on a hit only
was a timing difference on the existence oracle the lookup is built to close (review 18, R18-8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import NamedTuple

from tokenvault_common.ip_spellings import ips_spelled_by
from vault_service.domain.purpose_serials import serial_groups
from vault_service.domain.purpose_shape import SEGMENT_SEPARATORS

_IP_JOINS = frozenset(".:")
MIN_STORED_DEVICE_ID = 8
"""The fewest characters (separators dropped) of a run looked up as another call's device id."""
IP_CANDIDATE_GROUPS = 4
"""The fewest groups, joined by `.` or `:` only, read as an ip of another call: a whole address."""


class StoredCandidates(NamedTuple):
    """What a purpose could name of the values stored for other calls, by type, and the groups each is read from."""

    device_ids: frozenset[str]
    ips: frozenset[str]
    device_spans: Mapping[str, int]
    """Each device id candidate -> the groups of every run read as it (bit i: group i)."""
    ip_spans: Mapping[str, int]
    """Each ip candidate -> the groups of every run of IP_CANDIDATE_GROUPS or more that spells it."""
    groups: int
    """How many groups the purpose has."""

    @property
    def size(self) -> int:
        """How many values are looked up (each fingerprinted once per key)."""
        return len(self.device_ids) + len(self.ips)

    def groups_reading_as(self, device_ids: Iterable[str], ips: Iterable[str]) -> frozenset[int]:
        """The indices of the groups of each run read as one of `device_ids` or `ips` (candidates of this purpose).

        What a stored-value hit withholds (insider round 16, #2): a few dict lookups in what the
        walk recorded, and one pass over the groups whatever was found, so a purpose looked up and
        found costs what one not found does (review 18, R18-8). A value that is no candidate
        names no group (the lookup only ever finds candidates).
        """
        mask = 0
        for value in device_ids:
            mask |= self.device_spans.get(value, 0)
        for value in ips:
            mask |= self.ip_spans.get(value, 0)
        return frozenset(index for index in range(self.groups) if mask >> index & 1)


class GroupRuns(NamedTuple):
    """What `group_runs` reads in every run of whole groups of a purpose."""

    spelled: frozenset[str]
    """Each run and its compact form case-folded, and the ips a run joined by `.` or `:` only spells."""
    candidates: StoredCandidates
    shaped: bool
    """Whether a candidate has a stored value's shape (`shaped_as_a_stored_value`)."""


def stored_candidates(purpose: str) -> StoredCandidates:
    """What a reference-form `purpose` could name of a value stored for another call (attack 14, finding 3).

    Compared with the call's own values, a purpose is read in every spelling (`values_spelled_by`):
    a chance collision there has odds of about 2**-32 per value. Looked up among every value
    stored in the vault, the same readings named some stored value by chance or by design
    (review 15, finding 1): `GDPR-2026-0042` holds `GDPR`, `2026`, `GDPR-2026` (a producer that
    sends those as device ids blanked every such reference) and the ip 32.38.0.66 (its hex
    halves), and an ip read from any 8 hex digits or 8-10 decimal digits is stored in a large
    vault with the odds of the share of the address space it holds. So only what has the shape
    of the value is looked up:

    - a device id: a run of whole groups whose compact form (separators dropped) has at least
      MIN_STORED_DEVICE_ID characters and that holds a group mixing letters and digits otherwise
      than as a word and its number (`purpose_serials`: `G991B`, `a1b2c3d4e5f60718`). So never a
      group of letters only or digits only, nor a run of words and numbers alone (`GDPR-2026`,
      the leading run every reference of a kind shares, `CASE-2026-0815`, `0042/INC`,
      `CHG-25-03-14-A`), wherever it stands: a producer cannot blank a class of references with
      a few short device ids, only a purpose holding the very model or serial group it sent
      (`SM-G991B-ATK8Q7ZX`). Each such run as written, in upper case and in lower case, with
      its separators and without (a device id is stored as the producer wrote it; fingerprints
      are exact). A device id of words and numbers only (`ABC-1234-XYZ`) is not looked up;
    - an ip: what IP_CANDIDATE_GROUPS or more groups joined by `.` or `:` only spell (a whole
      address, which the shape check mostly refuses already). Number readings - a group or a
      window of hex or decimal digits, two hex halves, short `inet_aton` forms - are left to the
      comparison with the call's own values: any reference with such a group reads as some ip.

    A hit withholds the runs read as it only (`StoredCandidates.groups_reading_as`,
    `vault_service.domain.purpose_spans`; insider round 16, #2).
    At most 32 groups: a few hundred values for the longest purpose, a handful for a usual one.
    """
    return group_runs(purpose).candidates


def groups_reading_as(purpose: str, device_ids: Iterable[str], ips: Iterable[str]) -> frozenset[int]:
    """`StoredCandidates.groups_reading_as` of `purpose`'s candidates."""
    return stored_candidates(purpose).groups_reading_as(device_ids, ips)


def shaped_as_a_stored_value(purpose: str) -> bool:
    """Whether `purpose` holds a stored value's shape: an Erase withholds it without a lookup (review 16, finding 2).

    True when `stored_candidates` reads any device id (a run holding a model or serial group, at
    least MIN_STORED_DEVICE_ID characters: `GDPR-2026-801-SM-G991B-ATK8Q7ZX`) or any ip written as
    an address (IP_CANDIDATE_GROUPS groups joined by `.` or `:`), except that a group continuing a
    date or a release number (`purpose_serials.continues_a_date_or_version`: `REL-2026.12.04.1b`,
    `CHG-2026-12-04-2a`, `INC-2026Q3-0001`) is no model or serial group here: withheld whole by
    its shape, such a reference lost its audit context on every erasure (review 17, finding 5).
    The lookup still reads those runs (a hit withholds only them). An erasure split into calls,
    device first, withheld `GDPR-2026-801-<device id>` in the device call (its own value); the ip
    call, once the device was erased, kept it for good wherever the replica's memory of that
    withhold was not at hand (another replica, a restart: attack 15, finding 4; review 16,
    finding 2). Withheld by its shape alone, whether or not the lookup would hit, an Erase's
    purpose tells nobody what is stored (no oracle) and is withheld alike on every replica and
    after any restart. A usual reference has no candidate (`GDPR-2026-0042`, `INC-4821`,
    `SECOPS-2026-000123:step-2`: words and numbers only) and keeps its purpose. Not used for
    Detokenize, where a purpose is compared and looked up as before: an erasure's purpose should
    be the request reference alone, and erasures are rare.
    """
    return group_runs(purpose).shaped


@lru_cache(maxsize=64)
def group_runs(purpose: str) -> GroupRuns:
    """One walk over every run of whole groups of `purpose`, for the spellings, the candidates and the shape.

    `spelled`: each run and its compact form case-folded, and the ips that a run of groups
    joined by `.` or `:` only spells; the candidates (see `stored_candidates`): each serial run as
    written, upper and lower case, with and without separators, and the ips of IP_CANDIDATE_GROUPS
    groups or more (a subset of those spelled), each with the groups of every run read as it. A
    run without a serial group reads as a candidate only by its compact form (a candidate with
    separators is read from the same groups, so from a serial run), so those runs are kept aside
    and added where they do (`INC2026-Q3` reads as `INC2026Q3`, a serial group elsewhere). The
    groups so recorded are those a second walk over the runs found on a hit before R18-8
    (tests/unit/test_purpose_spans_recorded.py); the walk costs a few µs more (one map entry per
    candidate where a set entry was), on every first call alike.
    """
    pieces = SEGMENT_SEPARATORS.split(purpose)
    groups, joins = pieces[0::2], pieces[1::2]
    serial, serial_by_shape = serial_groups(groups)
    any_serial = any(serial)
    spelled: set[str] = set()
    device_spans: dict[str, int] = {}
    ip_spans: dict[str, int] = {}
    unserial: list[tuple[str, str, int]] = []  # the long runs without a serial group: compact forms, span
    shaped = False
    for first in range(len(groups)):
        run = compact = groups[first]
        ip_joined, has_serial, has_serial_by_shape = True, serial[first], serial_by_shape[first]
        below_first = (1 << first) - 1
        for last in range(first, len(groups)):
            if last > first:
                run = f"{run}{joins[last - 1]}{groups[last]}"
                compact = f"{compact}{groups[last]}"  # a reference's groups are letters and digits only
                ip_joined = ip_joined and joins[last - 1] in _IP_JOINS
                has_serial = has_serial or serial[last]
                has_serial_by_shape = has_serial_by_shape or serial_by_shape[last]
            folded_run, folded_compact = run.casefold(), compact.casefold()
            spelled.add(folded_run)
            spelled.add(folded_compact)
            if ip_joined:
                ips = ips_spelled_by(folded_run)
                spelled.update(ips)
                if last - first + 1 >= IP_CANDIDATE_GROUPS and ips:
                    span = ((2 << last) - 1) ^ below_first  # bits first..last
                    for ip in ips:
                        ip_spans[ip] = ip_spans.get(ip, 0) | span
                    shaped = True
            if has_serial:
                if len(compact) >= MIN_STORED_DEVICE_ID:
                    span = ((2 << last) - 1) ^ below_first
                    for reading in (run, compact, run.upper(), compact.upper(), folded_run, folded_compact):
                        device_spans[reading] = device_spans.get(reading, 0) | span
                    shaped = shaped or has_serial_by_shape
            elif any_serial and len(compact) >= MIN_STORED_DEVICE_ID:
                unserial.append((compact, folded_compact, ((2 << last) - 1) ^ below_first))
    for compact, folded_compact, span in unserial:
        if folded_compact in device_spans:  # a candidate it reads as has this folded form, a candidate too
            for reading in (compact, compact.upper(), folded_compact):
                if reading in device_spans:
                    device_spans[reading] |= span
    candidates = StoredCandidates(frozenset(device_spans), frozenset(ip_spans), device_spans, ip_spans, len(groups))
    return GroupRuns(frozenset(spelled), candidates, shaped)
