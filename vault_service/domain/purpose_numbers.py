"""The IPv4 addresses a purpose's runs of digits read as by their number: windows and dotted digits.

`ipv4_numbers_in` is read by `purpose_spellings.values_spelled_by` and compared with the call's
own values only, never looked up among the stored ones (any reference with such a run reads as
*some* address):

- `_ipv4_windows`: every window of 7-8 hex or 8-10 decimal digits inside a run, read as an
  address's number (review 12, finding 2; attack 15, finding 5);
- `_ipv4_octet_digits`: every split into four octets of a run's digits, an address's dotted form
  with its dots dropped (attack 16, finding 3).

The work per run is bounded: a run longer than MAX_WINDOWED_RUN is not read.
"""

from __future__ import annotations

import re
import socket

from tokenvault_common.ip_spellings import MIN_NUMBER_TO_SEARCH

MIN_HEX_RUN = 7
"""The shortest run of hex digits inside a group read as an ip: 0x1000000 (1.0.0.0) has 7 digits,
and no number below it is read as an address (`ip_spellings.MIN_NUMBER_TO_SEARCH`)."""
HEX_RUN = re.compile(rf"[0-9a-f]{{{MIN_HEX_RUN},}}", re.ASCII)
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


def _ipv4_windows(runs: set[str], widths: tuple[int, ...], base: int) -> set[str]:
    """The IPv4 addresses (canonical) that windows of `widths` digits inside `runs` read as, in `base`.

    What the ETL's own-value check finds by looking for an IPv4 address's number forms anywhere in
    an event id (etl_service.domain.own_values): `INC-aCB007107`, `INC-CB007107F` (hex) and
    `INC-A3405803783` (decimal) read as 203.0.113.7. Numbers below 1.0.0.0 are no address, as in
    `ips_spelled_by`; numbers of 2**32 and above are left to the whole-run reading (`values_spelled_by`). A
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


def ipv4_numbers_in(compact: str) -> set[str]:
    """The IPv4 addresses the digit runs of `compact` (a case-folded purpose without its separators) read as.

    Its windows of 7-8 hex digits and 8-10 decimal digits, and its runs' dotted digits. Read
    across the separators (attack 15, finding 5): a run inside a group is part of a run of the
    separator-free purpose, so its windows are among these.
    """
    spelled = _ipv4_windows(set(HEX_RUN.findall(compact)), IPV4_HEX_WINDOWS, 16)
    spelled.update(_ipv4_windows(set(_DIGIT_RUN.findall(compact)), IPV4_DECIMAL_WINDOWS, 10))
    spelled.update(_ipv4_octet_digits(set(_OCTET_DIGITS_RUN.findall(compact))))
    return spelled
