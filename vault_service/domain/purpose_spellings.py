"""What a reference-form purpose could spell or name of a value: the readings the vault compares and looks up.

- `values_spelled_by`: every spelling of a value of the call (compared with the call's own
  values in vault_service.service.revealing);
- `stored_candidates`: the values of another call's shape it could name (looked up among the
  stored values in vault_service.service.stored_values);
- `token_ids_in`, `may_hold_a_token`, `check_names_no_token_of`: the tokens it could hold,
  split into pieces.

The runs of whole groups are walked once per distinct purpose (`_group_runs`), for the spellings
(case-folded) and the stored candidates (as written) alike (review 15, finding 9).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

from tokenvault_common.ip_spellings import MIN_NUMBER_TO_SEARCH, ips_in_hex_groups, ips_spelled_by
from tokenvault_common.pii_text import dotted_numbers
from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose_shape import INSTEAD, REFERENCE_SEPARATORS, SEGMENT_SEPARATORS, TOKEN_BODY
from vault_service.domain.token_types import TokenType

_IP_JOINS = frozenset(".:")
_WITHOUT_SEPARATORS = str.maketrans("", "", REFERENCE_SEPARATORS)
MIN_HEX_RUN = 7
"""The shortest run of hex digits inside a group read as an ip: 0x1000000 (1.0.0.0) has 7 digits,
and no number below it is read as an address (`ip_spellings.MIN_NUMBER_TO_SEARCH`)."""
_HEX_RUN = re.compile(rf"[0-9a-f]{{{MIN_HEX_RUN},}}", re.ASCII)
"""A run of hex digits in a case-folded purpose; the search is greedy, so each match is a maximal run."""
IPV4_HEX_WINDOWS = (7, 8)
"""The widths of hex windows read as an IPv4 address inside a longer run: 8 digits (ffffffff), or
7 (a000001, 10.0.0.1: the leading zero dropped). A neighbouring a-f letter makes the maximal run
another number (`INC-aCB007107`), so every window of a run is read (review 12, finding 2)."""
IPV4_DECIMAL_WINDOWS = (8, 9, 10)
"""The widths of decimal windows read as an IPv4 address inside a longer run of digits: 1.0.0.0 is
16777216 (8 digits), 255.255.255.255 is 4294967295 (10)."""
_DIGIT_RUN = re.compile(rf"[0-9]{{{IPV4_DECIMAL_WINDOWS[0]},}}", re.ASCII)
"""A maximal run of decimal digits long enough to hold an IPv4 address as a number."""
_IPV4_END = 2**32
_OCTET_DIGITS_RUN = re.compile(r"[0-9]{4,}", re.ASCII)
"""A maximal run of decimal digits long enough to hold an IPv4 address's four octets written one after the other."""
MAX_WINDOWED_RUN = 64
"""A run longer than this is not windowed (a purpose within MAX_PURPOSE_LENGTH never has one): the
work per run is bounded by about 3 windows per character."""


@lru_cache(maxsize=64)
def values_spelled_by(purpose: str) -> frozenset[str]:
    """The values (case-folded, as the vault normalizes them) a reference-form `purpose` could spell.

    Every run of whole groups (`GDPR-2026-801-SM-G991B-ATK8Q7ZX` holds `SM-G991B-ATK8Q7ZX`), read
    as a device id as written and without its separators (`compact_form`: `INC-PIXEL7AGX7AS` and
    `INC-PIXEL_7A_GX7AS` both hold `pixel7agx7as`, the compact form of device `PIXEL-7A-GX7AS`),
    and, where its groups are joined by `.` or `:` only, as an ip in any spelling
    (`tokenvault_common.ip_spellings`); every dotted number `inet_aton` reads is an ip too, also
    glued to letters (`INC-V203.0.28935`, `CASE-9V0313.28935`: `dotted_numbers`, as the ETL's
    own-value check reads event ids); every maximal run of at least 7 hex digits inside a group is
    read as an ip too (`INC-ipCB007107`, `INC-VCB007107-2`, `INC-CB007107x`: 203.0.113.7 in hex
    glued to letters, attack 12, finding 5), and so is every window of 7 or 8 hex digits inside a
    run and of 8-10 decimal digits inside a run of digits, read as an IPv4 address
    (`INC-aCB007107`, `INC-CB007107F`: a neighbouring a-f letter makes the run another number;
    review 12, finding 2), as the ETL's own-value check finds an IPv4 address's number forms
    anywhere in an event id; four groups of 1-2 hex digits joined by one repeated separator and two
    groups of 4 hex digits are an IPv4 address in hex (`INC-CB-00-71-07`, `INC-cb00-7107`:
    `ips_in_hex_groups`, the ETL's reader of an event id too; attack 14, finding 5). The windows
    are read in the purpose without its separators (`_WITHOUT_SEPARATORS`), so an address's hex
    or decimal number split at any places reads as the unsplit one (`REQ-c6128-e52`,
    `REQ-c61-28e52`, `REQ-332-310-4850`: 198.18.142.82; attack 15, finding 5): still one window
    per width and position, about 2**-32 (2**-28 for 7 hex digits) each to match a given value
    by chance, and compared with the call's own values only, never looked up. The digits of an
    address's dotted form, its octets written one after the other, are read there too, however
    regrouped (`REQ-1981-8174-30`, `REQ-19818-17430`: 198.18.174.30; attack 16, finding 3:
    `_ipv4_octet_digits`), compared only as well. A value
    revealed or erased is compared with this set (one or two membership tests per value:
    `vault_service.service.revealing`); it is derived once per
    distinct purpose (cached: a client's purposes repeat). At most 32 groups: at most 528 runs and
    as many compact forms, plus at most about 3 windows per character, a few kB; 64 purposes are
    kept.
    """
    folded = purpose.casefold()
    spelled = set(_group_runs(purpose).spelled)
    for dotted in dotted_numbers(folded):
        spelled.update(ips_spelled_by(dotted))
    # Separators are not hex digits, so each run is inside a group; a whole group was read above.
    hex_runs = set(_HEX_RUN.findall(folded))
    for hex_run in hex_runs.difference(SEGMENT_SEPARATORS.split(folded)[0::2]):
        spelled.update(ips_spelled_by(hex_run))
    spelled.update(ips_in_hex_groups(folded))
    # The number windows are read across separators (attack 15, finding 5): a run inside a group is
    # part of a run of the separator-free purpose, so its windows are among these.
    compact = folded.translate(_WITHOUT_SEPARATORS)
    spelled.update(_ipv4_windows(set(_HEX_RUN.findall(compact)), IPV4_HEX_WINDOWS, 16))
    spelled.update(_ipv4_windows(set(_DIGIT_RUN.findall(compact)), IPV4_DECIMAL_WINDOWS, 10))
    spelled.update(_ipv4_octet_digits(set(_OCTET_DIGITS_RUN.findall(compact))))
    return frozenset(spelled)


MIN_STORED_DEVICE_ID = 8
"""The fewest characters (separators dropped) of a run looked up as another call's device id."""
_SERIAL_SHAPED = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*[0-9])(?![A-Za-z]+[0-9]+$)[A-Za-z0-9]+", re.ASCII)
"""A group mixing letters and digits otherwise than as a word and its number (`G991B`, `7A`,
`a1b2c3d4e5f60718`, `ATK8Q7ZX`; not `INC2026`, `Q3`, `step2`): the group of a model or serial."""
_DATE_OR_REVISION = re.compile(r"[0-9]+[A-Za-z][0-9]*", re.ASCII)
"""A group of digits with one letter after them, and maybe digits after it (`1b`, `2a`, `17b`,
`2026Q3`, `04T1200`): a revision suffix, a period or a time when it continues a date or a number."""
_YEAR_AND_PERIOD = re.compile(r"(?:19|20)[0-9]{2}[A-Za-z][0-9]{1,2}", re.ASCII)
"""A year, a letter and its number: a quarter, half, month or week (`2026Q3`, `2026H2`, `2026W49`)."""
IP_CANDIDATE_GROUPS = 4
"""The fewest groups, joined by `.` or `:` only, read as an ip of another call: a whole address."""


class StoredCandidates(NamedTuple):
    """What a purpose could name of the values stored for other calls, by the type looked up."""

    device_ids: frozenset[str]
    ips: frozenset[str]

    @property
    def size(self) -> int:
        """How many values are looked up (each fingerprinted once per key)."""
        return len(self.device_ids) + len(self.ips)


@lru_cache(maxsize=64)
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
      than as a word and its number (`_SERIAL_SHAPED`: `G991B`, `a1b2c3d4e5f60718`). So never a
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

    A hit withholds the runs read as it only (`groups_reading_as`, `vault_service.domain.purpose_spans`;
    insider round 16, #2).
    At most 32 groups: a few hundred values for the longest purpose, a handful for a usual one.
    """
    runs = _group_runs(purpose)
    return StoredCandidates(runs.device_ids, runs.ips)


def groups_reading_as(purpose: str, device_ids: Iterable[str], ips: Iterable[str]) -> frozenset[int]:
    """The indices of the groups of each run of `purpose` read as one of `device_ids` or `ips` (of `stored_candidates`).

    What a stored-value hit withholds (insider round 16, #2). The runs are walked again on a hit
    only (rare), so that a purpose looked up and not found costs what it did.
    """
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
                ip_joined = ip_joined and joins[last - 1] in _IP_JOINS
            named = not wanted_devices.isdisjoint(_device_readings(run, compact))
            if not named and wanted_ips and ip_joined and last - first + 1 >= IP_CANDIDATE_GROUPS:
                named = not wanted_ips.isdisjoint(ips_spelled_by(run.casefold()))
            if named:
                found.update(range(first, last + 1))
    return frozenset(found)


def _device_readings(run: str, compact: str) -> tuple[str, ...]:
    """A run of groups as a device id is looked up: as written, upper and lower case, with separators and without."""
    return (run, compact, run.upper(), compact.upper(), run.casefold(), compact.casefold())


def shaped_as_a_stored_value(purpose: str) -> bool:
    """Whether `purpose` holds a stored value's shape: an Erase withholds it without a lookup (review 16, finding 2).

    True when `stored_candidates` reads any device id (a run holding a model or serial group, at
    least MIN_STORED_DEVICE_ID characters: `GDPR-2026-801-SM-G991B-ATK8Q7ZX`) or any ip written as
    an address (IP_CANDIDATE_GROUPS groups joined by `.` or `:`), except that a group continuing a
    date or a release number (`_continues_a_date_or_version`: `REL-2026.12.04.1b`,
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
    return _group_runs(purpose).shaped


class _GroupRuns(NamedTuple):
    spelled: frozenset[str]
    device_ids: frozenset[str]
    ips: frozenset[str]
    shaped: bool


def _continues_a_date_or_version(groups: list[str], index: int) -> bool:
    """Whether group `index` is a date's or a release number's part rather than a model or serial (review 17, #5).

    A group of digits with one letter (`_DATE_OR_REVISION`) right after a group of digits
    (`REL-2026.12.04.1b`, `CHG-2026-12-04-2a`, `BUILD-2026.4.17b`: a revision suffix), or a year
    with a period (`2026Q3`). A model's group with a digit first follows its make's word
    (`PIXEL-7A`), and a serial holds more than one letter or starts with one (`G991B`, `ATK8Q7ZX`).
    """
    group = groups[index]
    if _YEAR_AND_PERIOD.fullmatch(group):
        return True
    return index > 0 and groups[index - 1].isdigit() and _DATE_OR_REVISION.fullmatch(group) is not None


@lru_cache(maxsize=64)
def _group_runs(purpose: str) -> _GroupRuns:
    """One walk over every run of whole groups of `purpose`, for `values_spelled_by` and `stored_candidates`.

    `spelled`: each run and its compact form case-folded, and the ips that a run of groups
    joined by `.` or `:` only spells; `device_ids` and `ips`: the stored candidates (see
    `stored_candidates`), as written, upper and lower case, and the ips of IP_CANDIDATE_GROUPS
    groups or more (a subset of those spelled).
    """
    pieces = SEGMENT_SEPARATORS.split(purpose)
    groups, joins = pieces[0::2], pieces[1::2]
    serial = [_SERIAL_SHAPED.fullmatch(group) is not None for group in groups]
    serial_by_shape = (
        [is_serial and not _continues_a_date_or_version(groups, i) for i, is_serial in enumerate(serial)]
        if any(serial)
        else serial
    )
    spelled: set[str] = set()
    device_ids: set[str] = set()
    stored_ips: set[str] = set()
    shaped = False
    for first in range(len(groups)):
        run = compact = groups[first]
        ip_joined, has_serial, has_serial_by_shape = True, serial[first], serial_by_shape[first]
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
                if last - first + 1 >= IP_CANDIDATE_GROUPS:
                    stored_ips.update(ips)
                    shaped = shaped or bool(ips)
            if has_serial and len(compact) >= MIN_STORED_DEVICE_ID:
                device_ids.update((run, compact, run.upper(), compact.upper(), folded_run, folded_compact))
                shaped = shaped or has_serial_by_shape
    return _GroupRuns(frozenset(spelled), frozenset(device_ids), frozenset(stored_ips), shaped)


TOKEN_RANDOM_LENGTH = 22
"""The characters of a token's random part (`vault_service.domain.tokens`)."""
_READING_SEPARATORS = str.maketrans("", "", "/.:#")
"""The separators a token's random part never holds (`-` and `_` it may)."""


@lru_cache(maxsize=64)
def token_ids_in(purpose: str) -> frozenset[str]:
    """The tokens a purpose could hold split into pieces, as `<prefix>_<22 characters>` for each token type.

    Each window of 22 characters of the purpose without `/ . : #` (a random part may hold `-` and
    `_`, so they are kept), and of the purpose without any separator (a random part without `-` or
    `_`, about half of them, split by those), as it is written (tokens are case-sensitive):
    `INC-15F8NFzd.mvrRBY3B.KkrLFA` holds `ip_15F8NFzdmvrRBY3BKkrLFA`. The vault looks them up
    among issued tokens (vault_service.service.stored_values: tokens of other calls; the call's
    own are refused by `check_names_no_token_of`). At most about 4 x 43 token ids.
    """
    readings = {purpose.translate(_READING_SEPARATORS), purpose.translate(_WITHOUT_SEPARATORS)}
    windows = {
        reading[i : i + TOKEN_RANDOM_LENGTH]
        for reading in readings
        for i in range(len(reading) - TOKEN_RANDOM_LENGTH + 1)
    }
    return frozenset(f"{token_type.prefix}_{window}" for window in windows for token_type in TokenType)


def _ipv4_windows(runs: set[str], widths: tuple[int, ...], base: int) -> set[str]:
    """The IPv4 addresses (canonical) that windows of `widths` digits inside `runs` read as, in `base`.

    What the ETL's own-value check finds by looking for an IPv4 address's number forms anywhere in
    an event id (etl_service.domain.own_values): `INC-aCB007107`, `INC-CB007107F` (hex) and
    `INC-A3405803783` (decimal) read as 203.0.113.7. Numbers below 1.0.0.0 are no address, as in
    `ips_spelled_by`; numbers of 2**32 and above are left to the whole-run reading above. A
    window longer than a run is none; a run longer than MAX_WINDOWED_RUN is not windowed.
    """
    numbers: set[int] = set()
    for run in runs:
        if len(run) > MAX_WINDOWED_RUN:
            continue
        for width in widths:
            numbers.update(int(run[start : start + width], base) for start in range(len(run) - width + 1))
    return {socket.inet_ntoa(n.to_bytes(4, "big")) for n in numbers if MIN_NUMBER_TO_SEARCH <= n < _IPV4_END}


def _octets_at(digits: str) -> list[list[tuple[str, int]]]:
    """Per position of `digits` (and one at its end), each octet starting there and where it ends.

    An octet as `inet_ntoa` writes it: 0-255, no leading zero.
    """
    found: list[list[tuple[str, int]]] = []
    for start, digit in enumerate(digits):
        here = [(digit, start + 1)]
        if digit != "0":  # no longer octet has a leading zero
            two, three = digits[start : start + 2], digits[start : start + 3]
            if len(two) == 2:
                here.append((two, start + 2))
            if len(three) == 3 and three <= "255":  # digits of one length compare as their numbers do
                here.append((three, start + 3))
        found.append(here)
    found.append([])  # none starts where the digits end
    return found


_MAX_OCTET_DIGITS = 12
"""The most digits of an IPv4 address's dotted form with its dots dropped (255255255255)."""


def _ipv4_octet_digits(runs: set[str]) -> set[str]:
    """The IPv4 addresses whose dotted form's digits, the dots dropped, stand anywhere in `runs` (attack 16, finding 3).

    `1981817430` is 198.18.174.30 with its dots dropped (and 198.181.74.30, ...): a purpose that
    writes those digits however grouped (`REQ-1981-8174-30`, `REQ-19818-17430`) names the address
    to anyone reading the audit log, as its number or hex form does. Every split into four octets
    of the (at most 12) digits from each position is read, the same 12 digits once (at most 81
    addresses per position, about 20 for random digits). A short address (`1.2.3.4` in
    `INC-1234`) matches only a call revealing that very address: compared with the call's own
    values only, never looked up among the stored ones. A run longer than MAX_WINDOWED_RUN is not
    read, as for the number windows.
    """
    spelled: set[str] = set()
    for run in runs:
        if len(run) > MAX_WINDOWED_RUN:
            continue
        octets = _octets_at(run)
        heads: set[str] = set()
        for start in range(len(run) - 3):
            head = run[start : start + _MAX_OCTET_DIGITS]
            if head in heads:
                continue  # the same digits split the same ways
            heads.add(head)
            for first, second_at in octets[start]:
                if first == "0":
                    continue  # below 1.0.0.0: no address, as in `ips_spelled_by`
                for second, third_at in octets[second_at]:
                    two = f"{first}.{second}."
                    for third, fourth_at in octets[third_at]:
                        three = f"{two}{third}."
                        spelled.update([three + fourth for fourth, _ in octets[fourth_at]])
    return spelled


MIN_TOKEN_PIECE = 12
"""The shortest piece of a token's random part (separators `- _ / . : #` dropped) that a purpose
may not hold when the call names that token: 12 random characters name one token among any
number issued (62**12 choices), and no reference holds 12 of a random token's by chance."""
CALL_REFERENCE = "it holds a token this call names, or a piece of one (with separators or none)"


def check_names_no_token_of(purpose: str, tokens: Iterable[str]) -> None:
    """Raise InvalidRequest when `purpose` holds a token of the call, split by separators or not.

    `TOKEN_BODY` finds one run of 20 token characters; a token's random part split by `.`, `:`,
    `/` or `#` (`INC-15F8NFzd.mvrRBY3B.KkrLFA`) is short runs, each passing (attack 14, finding 7).
    So the purpose without its separators, case-folded, is searched for any MIN_TOKEN_PIECE
    characters of each well-formed token of the call (`tokens`), also without separators (`-` and
    `_` are in tokens too). Refused
    as a purpose holding a token is, before anything is opened or metered: the check reads the
    call's own text only, never the vault, so a refusal tells nothing about whether a token exists.
    Only the tokens of the call are at hand here. Measured in-process (4 Dec): 1.5-2.8 µs for a
    one-token call, 44-93 µs per 1,000 tokens with a usual reference (about 1% of such a call) and
    320 µs with a 64-character purpose; 0.1 µs when the purpose is shorter than MIN_TOKEN_PIECE
    without its separators (`INC-4821`).
    """
    pieces = _token_pieces(purpose)
    if not pieces:
        return
    named = "\n".join(tokens).translate(_WITHOUT_SEPARATORS).casefold()  # one C pass over the call's tokens
    if any(piece in named for piece in pieces):
        raise InvalidRequest(f"purpose must not contain personal data ({CALL_REFERENCE}); {INSTEAD}")


@lru_cache(maxsize=64)
def _token_pieces(purpose: str) -> tuple[str, ...]:
    """Each distinct MIN_TOKEN_PIECE-character window of `purpose` without separators, case-folded (cached)."""
    compact = purpose.translate(_WITHOUT_SEPARATORS).casefold()
    return tuple(dict.fromkeys(compact[i : i + MIN_TOKEN_PIECE] for i in range(len(compact) - MIN_TOKEN_PIECE + 1)))


MIN_CLASS_CHANGES = 5
"""The fewest changes between upper case, lower case and digit in a purpose without separators that
`may_hold_a_token` reads as a token's random part: a random part changes about 13 times in its 22
characters, fewer than 5 times in about 0.13% of them; a reference of words and numbers a few
times (`SECOPS-2026-000123:step-2`, 3)."""


def _character_class(c: str) -> int:
    return 0 if c.isdigit() else 1 if c.isupper() else 2


@lru_cache(maxsize=64)
def may_hold_a_token(purpose: str) -> bool:
    """Whether `purpose` without its separators holds what may be a token's random part (review 15, finding 5).

    `token_ids_in` reads the purpose without `/ . : #`, and without any separator: a random part
    holding `-` or `_` (about half of them), written with one more `-` beside a `.` split
    (`INC-AbCdEf1h-IjKl.Mn-OpQrStU`), is in neither reading, and passes the shape check (each run
    shorter than 20). So a purpose whose separator-free form holds a `TOKEN_BODY` run (20 or more
    characters mixing upper case, lower case and digits) changing between them at least
    MIN_CLASS_CHANGES times is withheld, never refused (a refusal would tell nothing here, but
    a withhold needs no lookup): the cost is the purpose of a rare mixed-case reference.
    """
    compact = purpose.translate(_WITHOUT_SEPARATORS)
    if len(compact) < 20 or not TOKEN_BODY.search(compact):
        return False
    classes = [_character_class(c) for c in compact]
    return sum(a != b for a, b in pairwise(classes)) >= MIN_CLASS_CHANGES
