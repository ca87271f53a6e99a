"""Does an event's `event_id` carry the event's own ip or device id? Exact, in any usual spelling.

A pattern (tokenvault_common.pii_text) cannot tell every spelling of an address from a counter:
203.0.113.7 as the integer 3405803783 or as hex cb007107, a device id of any shape (an IDFV is a
UUID, which ids are expected to be). The event's own values are in hand once its body is parsed,
so the id is compared with them: the check that matters most (the masked columns and the id
would say the same thing) and cheap (a few substring searches per message).
"""

from __future__ import annotations

import socket

from tokenvault_common.device_spellings import compact_form
from tokenvault_common.ip_spellings import (
    MIN_NUMBER_TO_SEARCH,
    HexGroupHints,
    ip_forms,
    ips_in_decimal_groups,
    ips_in_hex_groups,
    ips_spelled_by,
    may_spell_hex_octets,
    padded_octets,
)
from tokenvault_common.ipv4 import is_canonical_ipv4
from tokenvault_common.pii_text import dotted_numbers

OWN_VALUE_PROBLEM = "the event_id attribute must be an opaque id, but it holds the event's own {field}"
"""The reason of an id that carries its own event's ip or device id; it never quotes the value."""

IPV4_HEX_DIGITS = 8
"""The most hex digits an IPv4 address has as one number (ffffffff): such a number form is searched
anywhere in the id; a longer one (IPv6) only as a whole number."""
MIN_DEVICE_ID_TO_SEARCH = 4
"""A device id shorter than this is refused only as a whole group of the id (bounded by
non-alphanumerics): a 1-3 character id would otherwise be found by chance in opaque ids."""
MIN_COMPACT_DEVICE_ID = 12
"""The device id without its separators (6D92078A82464BA4...) is searched for only from this
length when it is digits only: shorter runs of digits are common in counters."""
MIN_LETTERED_COMPACT_DEVICE_ID = 8
"""The device id without its separators is searched for from this length when it holds a letter
(`G991B-ATK8Q7` in `evt-g991batk8q7-1`: attack 37, K2): no counter or date, and 8 characters of
hex digits at least, about 16**-8 per window of an opaque id."""


def own_value_in(event_id: str, ip: str, device_id: str) -> str | None:
    """The problem (naming the field, never the value) when `event_id` carries `ip` or `device_id`, else None.

    Compared case-insensitively: the ip as written and in canonical form (IPv6 also exploded), as
    a decimal integer and as hex - an IPv4 address's anywhere, also inside a longer run of digits
    (`evt-aCB007107`; the vault reads the same windows of a purpose), an IPv6 address's only
    bounded by non-digits and non-hex-digits respectively (32-39 digits: read whole) -, in any
    dotted form `inet_aton` reads (`203.0.0x7307`, also after a `v`), an IPv4 address also in hex
    octets or halves (`CB-00-71-07`, `cb00-7107`: `ips_in_hex_groups`, the vault's reader of a
    purpose, run only where the id holds the substrings such a spelling must), and in decimal octets:
    as 12 digits, each octet `%03d` (`203000113042`), or as four groups joined by one repeated
    separator, letters too, leading zeros read in decimal (`203x0x113x42`, `203_000_113_042`:
    attack 37, K2); the device id as written and, when long (12 characters, or 8 holding a letter),
    without its separators. Only the event's own values are compared, so
    an opaque id is refused only when it holds this event's ip: for an IPv4 address whose hex form
    has 8 digits, about 2**-32 per window of the id (a 32-digit UUID without dashes: 25 windows,
    about 6e-9; a UUID's dashes add two pairs of hex halves, 2**-31), for one of 7 digits
    (1.0.0.0-15.255.255.255, 10/8 among them) 2**-28 per window (about 1e-7 for such a UUID, 3e-8
    for one with dashes); the decimal groups of an ip whose four octets are single digits about 1e-6
    per id of hex digits (1 in 1,000,000 ids of the bench's shape held 1.1.1.1, measured; none held
    an ip of larger octets).
    """
    field = own_field_in(event_id, ip, device_id)
    return None if field is None else OWN_VALUE_PROBLEM.format(field=field)


def own_field_in(text: str, ip: str, device_id: str) -> str | None:
    """`ip` or `device_id` when `text` carries that value of the event (as `own_value_in` finds it), else None.

    Also what the ETL asks of the event's fields stored in clear (domain/validation.py).
    """
    folded = text.casefold()
    if _holds_ip(folded, ip):
        return "ip"
    if _holds_device_id(folded, device_id):
        return "device_id"
    return None


def _holds_ip(folded: str, ip: str) -> bool:
    written = ip.strip()
    if not written:  # a refused event may have none: "" would be found in every id
        return False
    if is_canonical_ipv4(written):
        return _holds_canonical_ipv4(folded, written)
    return _holds_any_ip(folded, ip)


def _holds_canonical_ipv4(folded: str, address: str) -> bool:
    """`_holds_any_ip` of a canonical dotted-quad IPv4 address (nearly every ip), each spelling made only as needed.

    The same tests of the same spellings (`ip_forms`; tests/unit/test_event_id_pii.py compares the two),
    without building them all first: an opaque id holds none, and building every spelling of each
    message's ip (no cache: it would keep the ips, and cannot hold as many as the ETL sees) cost more than testing them.
    The hex-group spellings are looked at only where the id holds the octet every one of them holds.
    """
    if address in folded:
        return True
    packed = socket.inet_aton(address)
    number = int.from_bytes(packed, "big")
    if number >= MIN_NUMBER_TO_SEARCH and (str(number) in folded or f"{number:x}" in folded):
        return True
    first, second = f"{packed[0]:x}", f"{packed[1]:x}"
    if (second if len(second) > len(first) else first) in folded:  # the hints' lead (`ip_forms`)
        hex_groups = ip_forms(address)[2]
        if hex_groups is not None and _in_hex_groups(folded, hex_groups):
            return True
    # Every decimal-octet spelling holds the first and the last octet in decimal: most ids hold not both.
    if str(packed[3]) in folded and str(packed[0]) in folded and _in_decimal_octets(folded, address, packed):
        return True
    return any(address in ips_spelled_by(dotted) for dotted in dotted_numbers(folded))


def _in_decimal_octets(folded: str, address: str, packed: bytes) -> bool:
    """Whether `folded` holds the IPv4 address of `packed` as its four octets in decimal (attack 37, K2).

    As 12 digits (`203000113042`: each octet `%03d`, `padded_octets`) or as four groups joined by one
    repeated separator, letters too, leading zeros read in decimal (`203x0x113x42`, `203_000_113_042`:
    `ips_in_decimal_groups`). Both hold the first and the last octet in decimal: the caller tests that
    first (two substring tests), so most ids (for an ip of 2-3 digit octets) go no further.
    """
    return padded_octets(packed) in folded or address in ips_in_decimal_groups(folded)


def _in_hex_groups(folded: str, hints: HexGroupHints) -> bool:
    """Whether `folded` spells the address of `hints` in hex octets or halves (attack 14, finding 5).

    The shared reader, only where the id holds what such a spelling must (one substring test for an
    opaque id, where the lead octet has two hex digits; the group-shape test only where both octet
    hints are there).
    """
    address, lead, high_half, other_octet = hints
    return (
        lead in folded
        and (high_half in folded or (other_octet in folded and may_spell_hex_octets(folded)))
        and address in ips_in_hex_groups(folded)
    )


def _holds_any_ip(folded: str, ip: str) -> bool:
    """Whether `folded` holds `ip` (any form `ipaddress` reads) in any spelling `ip_forms` gives."""
    spelled, numbers, hex_groups = ip_forms(ip)
    if any(form in folded for form in spelled):
        return True
    if hex_groups is not None and _in_hex_groups(folded, hex_groups):  # hex octets or halves
        return True
    # Four decimal groups (`203x0x113x42`); its 12 digits (`203000113042`) are among `spelled`.
    if hex_groups is not None and hex_groups[0] in ips_in_decimal_groups(folded):
        return True
    if numbers and len(numbers[-1][0]) <= IPV4_HEX_DIGITS:
        # An IPv4 address: its decimal (8-10 digits) and hex (7-8) forms anywhere, also inside a
        # longer run (`aCB007107`, `CB007107F`, `A3405803783`: review 12, finding 2), as the vault
        # reads windows of a purpose's runs. One substring test each, in C.
        if any(digits in folded for digits, _ in numbers):
            return True
    # An IPv6 address as one number (up to 39 digits): a whole number only - the plain substring
    # test first (fast), the bounds only where it is there.
    elif any(
        digits in folded and _bounded_in(folded, digits, alphabet, leading_zeros=True) for digits, alphabet in numbers
    ):
        return True
    # The dotted forms `inet_aton` reads (203.0.0x7307, 0313.0.29447, v203.0.29447): the shared
    # detector refuses them all but those it takes for a version; the event's own ip is refused in any.
    return any(not ips_spelled_by(dotted).isdisjoint(spelled) for dotted in dotted_numbers(folded))


_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


def _bounded_in(folded: str, text: str, alphabet: frozenset[str], leading_zeros: bool = False) -> bool:
    """Whether `text` stands in `folded` between characters outside `alphabet` (after any zeros: `leading_zeros`).

    What `(?<![alphabet])text(?![alphabet])` finds - `(?<![alphabet])0*text(?![alphabet])` with
    `leading_zeros` - without compiling a pattern per ip or device id (the ETL sees more distinct
    values than any pattern cache holds: compiling two per message cost the core path two thirds
    of its speed, measured).
    """
    start = folded.find(text)
    while start != -1:
        first = start
        while leading_zeros and first > 0 and folded[first - 1] == "0":
            first -= 1
        end = start + len(text)
        if (first == 0 or folded[first - 1] not in alphabet) and (end == len(folded) or folded[end] not in alphabet):
            return True
        start = folded.find(text, start + 1)
    return False


def _holds_device_id(folded: str, device_id: str) -> bool:
    device = device_id.strip().casefold()
    if not device:
        return False
    if len(device) < MIN_DEVICE_ID_TO_SEARCH:
        return _bounded_in(folded, device, _ALNUM)
    if device in folded:
        return True
    # Its compact form is no longer (case folding is idempotent); a letter: one C call, no compact form yet.
    lettered = device != device.upper()
    if len(device) < (MIN_LETTERED_COMPACT_DEVICE_ID if lettered else MIN_COMPACT_DEVICE_ID):
        return False
    compact = compact_form(device)  # not cached: a cache keyed by the value kept it past its batch (attack 34, E2)
    least = MIN_LETTERED_COMPACT_DEVICE_ID if lettered and not compact.isdigit() else MIN_COMPACT_DEVICE_ID
    return len(compact) >= least and compact in compact_form(folded)
