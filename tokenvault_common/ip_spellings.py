"""The spellings of an ip that a reader (or `inet_aton`) takes for it, in both directions.

Text that must never carry a call's own values - the ETL's event ids, the vault's purposes - is
compared with those values in every usual spelling of an ip: as written, canonical (IPv4-mapped
IPv6 as its IPv4, the vault's own `normalize_ip`), IPv6 exploded, and the address as one decimal
or hex number (with or without `0x`). A number below 1.0.0.0 is not taken for an address
(0.0.0.0/8 is "this network", and a small number is any counter's or ticket's).

- `ip_forms(ip)`: from an ip to its spellings, searched for in an opaque id (the ETL);
- `ips_spelled_by(piece)`: from a whole piece of text to the canonical ips it spells (the vault,
  which reads a purpose piece by piece), also in the short forms `inet_aton` accepts
  (`203.0.29447`, `203.29447`, `0xcb.0.0x71.7`, `0313.0.0161.07`);
- `ips_in_hex_groups(text)`: the IPv4 addresses that groups of hex digits in a text spell, as four
  octets (`CB-00-71-07`) or two halves (`cb00-7107`): the one reader of both services (attack 14,
  finding 5); `ip_forms` gives the ETL substrings that any such spelling of its ip holds, so that
  the reader runs only on an id that may hold one;
- `ips_in_decimal_groups(text)`: the IPv4 addresses that four groups of decimal digits joined by
  one repeated separator spell, each group read in decimal with its leading zeros
  (`203x0x113x42`, `203_000_113_042`, `203.000.113.042`: attack 37, K1 and K2).

A piece longer than any spelling of an address (MAX_SPELLING_LENGTH, leading zeros aside) spells
none, and is not read: a producer's event id on a letter SQS's redrive moved can be about 256 kB,
and a run of more than 4,300 digits is no number to `int` (attack 12, finding 3).
"""

from __future__ import annotations

import ipaddress
import re
import socket

from tokenvault_common.ipv4 import is_canonical_ipv4
from tokenvault_common.values import InvalidPiiValue, normalize_ip

MIN_NUMBER_TO_SEARCH = 2**24
"""The number forms of an ip count from 1.0.0.0 up (0.0.0.0/8 is "this network")."""
DECIMAL = frozenset("0123456789")
HEX = frozenset("0123456789abcdef")
_MAX_IP_NUMBER = 2**128
MAX_SPELLING_LENGTH = len("0000:0000:0000:0000:0000:ffff:255.255.255.255")
"""The longest spelling of an address, each part's leading zeros aside (45): a 128-bit number has at
most 39 decimal digits (32 hex), and `inet_aton`'s forms are shorter."""
_LEADING_ZEROS = re.compile(r"(?:^|(?<=[.:x]))0+(?=[0-9a-f])")
"""The leading zeros of each part (after a `.`, a `:` or a `0x`): any number of them reads the same."""
_IP_SHAPED = re.compile(r"[0-9a-fx.:]+", re.ASCII)
"""The only characters (case-folded) any spelling read by `ips_spelled_by` is made of. No blanks:
glibc's `inet_aton` ignores whatever follows one (`1.2.3.4 x` reads as 1.2.3.4)."""


def canonical_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `text` is in `ipaddress`'s reading (IPv4-mapped IPv6 as its IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _unmapped(address)


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address as its IPv4 address; any other as it is (as `normalize_ip` stores it)."""
    return getattr(address, "ipv4_mapped", None) or address


HexGroupHints = tuple[str, str, str, str]
"""(address, lead, high half, other octet): substrings that spellings of an IPv4 address in hex
groups hold, case-folded (a plain tuple: unpacked per message). Every spelling holds `lead`, the
hex digits (no leading zero) of the first or second octet, whichever has more (`cb` of
203.0.113.7: in `cb00` and in `cb-00-71-07`); two halves hold the high half (`cb00`); four octets
hold each octet's digits, `other octet` the longest of the other three's (`71`)."""
IpForms = tuple[tuple[str, ...], tuple[tuple[str, frozenset[str]], ...], HexGroupHints | None]
"""What `ip_forms` returns (a plain tuple, unpacked per message)."""


def ip_forms(ip: str) -> IpForms:
    """The spellings of `ip` to search as substrings, its number forms and, for IPv4, its hex-group hints.

    Not cached: a cache keyed by the ip kept the ETL's values in its memory past their batch and the
    person's erasure (attack 34, E2); it missed 87 % of a busy ETL's ips anyway (docs/performance.md).

    The spellings are case-folded. A number form (decimal and hex, each with its digit alphabet) of
    an IPv6 address is to be searched as a whole number (bounded by characters outside its
    alphabet), so that a longer run of digits in an opaque id does not match by chance. The hints
    (`HexGroupHints`) tell whether `ips_in_hex_groups` can find the address in a text at all.
    """
    written = ip.strip().casefold()
    return _canonical_ipv4_forms(written) if is_canonical_ipv4(written) else _forms_read_by_ipaddress(written)


def _forms_read_by_ipaddress(written: str) -> IpForms:
    """`ip_forms` of a stripped, case-folded ip, read by `ipaddress` (any form it reads)."""
    address = canonical_address(written.split("%", 1)[0])
    if address is None:
        return (written,), (), None
    # In a fixed order (as `_canonical_ipv4_forms` gives them): written, canonical, then the long form.
    long_form = address.exploded if address.version == 6 else padded_octets(address.packed)
    spelled = dict.fromkeys((written, str(address), long_form))
    hints = _hex_group_hints(address) if address.version == 4 else None
    number = int(address)
    if number < MIN_NUMBER_TO_SEARCH:
        return tuple(spelled), (), hints
    return tuple(spelled), ((str(number), DECIMAL), (f"{number:x}", HEX)), hints


def _canonical_ipv4_forms(address: str) -> IpForms:
    """`ip_forms` of a canonical dotted-quad IPv4 address (nearly every ip), without `ipaddress`'s objects.

    The forms `_forms_read_by_ipaddress` gives (tests/unit/test_ip_spellings.py compares them): such an
    address is its own canonical spelling, and `inet_aton` reads it as `ipaddress` does. The ETL
    sees more distinct ips than a cache could hold: building them through `ipaddress` cost
    about a third of the ETL's own-value check (6 of 12.7 µs a message, measured).
    """
    packed = socket.inet_aton(address)
    number = int.from_bytes(packed, "big")
    digits = [f"{octet:x}" for octet in packed]
    lead = 1 if len(digits[1]) > len(digits[0]) else 0
    others = digits[1:] if lead == 0 else [digits[0], digits[2], digits[3]]
    # The longest of the others, the first of equals, a `0` last: `_hex_group_hints`' choice without its key calls.
    other = next((d for d in others if len(d) == 2), None) or next((d for d in others if d != "0"), "0")
    hints = address, digits[lead], f"{number:08x}"[:4], other
    spelled = (address, padded_octets(packed))
    if number < MIN_NUMBER_TO_SEARCH:
        return spelled, (), hints
    return spelled, ((str(number), DECIMAL), (f"{number:x}", HEX)), hints


def padded_octets(packed: bytes) -> str:
    """An IPv4 address's octets as 3 decimal digits each, one after the other (`203000113042`: 203.0.113.42).

    The fixed-width "ip as 12 digits" of call records and mainframe exports (attack 37, K2). Searched
    for as a substring of the event's own ip only: 12 given digits, about 10**-12 per window by chance.
    """
    return "%03d%03d%03d%03d" % tuple(packed)  # noqa: UP031 (345 ns; the f-string of four parts: 676 ns, measured)


def _hex_group_hints(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> HexGroupHints:
    digits = [f"{octet:x}" for octet in address.packed]
    lead = 1 if len(digits[1]) > len(digits[0]) else 0
    others = [d for i, d in enumerate(digits) if i != lead]
    other = max(others, key=lambda d: (len(d), d != "0"))  # `0` is in most ids: the weakest hint
    return str(address), digits[lead], f"{int(address):08x}"[:4], other


_HEX_OCTETS = re.compile(
    r"(?<![0-9a-z])(?=([0-9a-f]{1,2})([^0-9a-z])([0-9a-f]{1,2})\2([0-9a-f]{1,2})\2([0-9a-f]{1,2})(?![0-9a-z]))",
    re.ASCII | re.IGNORECASE,
)
"""Four groups of 1-2 hex digits joined by one repeated character that is no ASCII letter or digit
(`CB-00-71-07`, `cb.0.71.7`); a lookahead, so that overlapping runs (`AB-CD-EF-01-02`) are all read."""
_HEX_HALVES = re.compile(r"(?<![0-9a-z])(?=([0-9a-f]{4})[^0-9a-z]([0-9a-f]{4})(?![0-9a-z]))", re.ASCII | re.IGNORECASE)
"""Two groups of exactly 4 hex digits joined by one character that is no ASCII letter or digit (`cb00-7107`)."""
_BYTE_SHAPES = bytes(
    ord("h") if chr(b) in "0123456789abcdefABCDEF" else ord("z") if chr(b).isascii() and chr(b).isalnum() else ord("-")
    for b in range(256)
)
"""Each byte of UTF-8 text as what it is: `h` a hex digit, `z` another ASCII letter or digit, `-`
anything else (each byte of a non-ASCII character too, as the patterns above read it)."""
_SHORT_HEX_GROUP = re.compile(rb"-hh?-")


def spells_hex_octets(text: str) -> bool:
    """Whether `text` holds four hex octets joined by one repeated separator, an IPv4 address to a reader."""
    return _HEX_OCTETS.search(text) is not None


def may_spell_hex_octets(text: str) -> bool:
    """Whether `text` has a group of 1-2 hex digits between two separators, as four hex octets do.

    A necessary condition of `spells_hex_octets`, cheaper (0.1-0.4 µs on an id of up to 128
    characters, where that pattern takes 0.6-1.9 µs): false at once when `text` has no separator,
    else one pattern on the bytes' shapes whose search skips to each separator.
    """
    encoded = text.encode("utf-8", "surrogatepass")
    return not encoded.isalnum() and _SHORT_HEX_GROUP.search(encoded.translate(_BYTE_SHAPES)) is not None


def ips_in_hex_groups(text: str) -> frozenset[str]:
    """The IPv4 addresses (canonical) that groups of hex digits in `text` spell (attack 14, finding 5).

    Four groups of 1-2 hex digits joined by one repeated separator are its octets (`INC-CB-00-71-07`,
    `INC-CB.00.71.07`: 203.0.113.7); two groups of exactly 4 hex digits joined by one separator are
    its halves (`INC-cb00-7107`), from 1.0.0.0 up. A group is bounded by characters that are no
    ASCII letter or digit. Two halves are only compared with a value, never refused as an address
    (`spells_hex_octets` is): `GDPR-2026-0042` has that shape too (32.38.0.66).
    """
    ips = {".".join(str(int(m[i], 16)) for i in (1, 3, 4, 5)) for m in _HEX_OCTETS.finditer(text)}
    for m in _HEX_HALVES.finditer(text):
        number = int(m[1] + m[2], 16)
        if number >= MIN_NUMBER_TO_SEARCH:
            ips.add(socket.inet_ntoa(number.to_bytes(4, "big")))
    return frozenset(ips)


_DECIMAL_GROUPS = re.compile(
    r"(?<![0-9])(?=([0-9]{1,3})([^0-9]{1,6})([0-9]{1,3})\2([0-9]{1,3})\2([0-9]{1,3})(?![0-9]))", re.ASCII
)
"""Four groups of 1-3 decimal digits joined by one repeated run of 1-6 other characters (the whole
run between two groups, letters included): `203x0x113x42`, `203_000_113_042`, `203 . 0 . 113 . 42`;
a lookahead, so that overlapping runs are all read."""


def ips_in_decimal_groups(text: str, *, letters: bool = True, bounded: bool = False) -> frozenset[str]:
    """The IPv4 addresses (canonical) four decimal groups of `text` spell, joined by one repeated separator.

    Each group is read in decimal, leading zeros and all (`203.000.113.042` is 203.0.113.42 to a
    `%03d` logger, 203.0.113.34 to `inet_aton`, which `ips_spelled_by` reads), and must be 0-255.
    The separator is the whole run of non-digits between two groups, the same run three times
    (`203x0x113x42`; `1a2b3c4` is not read: joined by any runs, a hex id's digits spell an address
    of four small octets about once in 15,000 ids, measured). `letters`: also a separator holding
    a letter or digit of any script (an opaque id's own letters); `bounded`: not read inside a
    longer run of groups joined the same way (`1.203.0.113.7`, `203,0,113,7,9`).
    """
    found: set[str] = set()
    for m in _DECIMAL_GROUPS.finditer(text):
        join = m[2]
        if not letters and any(c.isalnum() for c in join):
            continue
        octets = (int(m[1]), int(m[3]), int(m[4]), int(m[5]))
        if max(octets) > 255:
            continue
        if bounded and _continued(text, m.start(), m.start() + sum(map(len, m.groups())) + 2 * len(join), join):
            continue
        found.add("%d.%d.%d.%d" % octets)  # noqa: UP031
    return frozenset(found)


def _continued(text: str, start: int, end: int, join: str) -> bool:
    """Whether `join` and a digit come right before `start` or right after `end` in `text`."""
    n = len(join)
    before = start > n and text[start - n : start] == join and text[start - n - 1] in DECIMAL
    return before or (text[end : end + n] == join and text[end + n : end + n + 1] in DECIMAL)


def ips_spelled_by(piece: str) -> frozenset[str]:
    """The canonical ips (as the vault stores them) that `piece`, read whole and case-insensitively, spells.

    Usually none or one; a number can read two ways (`0042` as decimal or octal, `3405803783` as
    decimal or hex), and both readings are returned.
    """
    text = piece.casefold()
    if not _IP_SHAPED.fullmatch(text) or _longer_than_any_spelling(text):
        return frozenset()
    if ":" in text or text.count(".") == 3:  # the forms `ipaddress` reads; a parse that fails costs an exception
        try:
            return frozenset((normalize_ip(text),))
        except InvalidPiiValue:
            pass
    readings = _number_readings(text) if "." not in text else set()
    if ":" not in text:
        readings.add(_inet_aton(text))
    return frozenset(
        _canonical(number)
        for number in readings
        if number is not None and MIN_NUMBER_TO_SEARCH <= number < _MAX_IP_NUMBER
    )


def _longer_than_any_spelling(text: str) -> bool:
    """Whether `text`, once each part's leading zeros are dropped, is longer than any address can be written."""
    return len(text) > MAX_SPELLING_LENGTH and len(_LEADING_ZEROS.sub("", text)) > MAX_SPELLING_LENGTH


def _canonical(number: int) -> str:
    return str(_unmapped(ipaddress.ip_address(number)))


def _inet_aton(text: str) -> int | None:
    """The IPv4 number `inet_aton` reads in `text` (1-4 dotted parts, each decimal, `0x` hex or octal), or None."""
    try:
        return int.from_bytes(socket.inet_aton(text))
    except OSError:
        return None


def _number_readings(text: str) -> set[int | None]:
    """`text` read as one number the ways `inet_aton` does not (hex without `0x`, `0042` as decimal too).

    Up to 128 bits, so that an IPv6 address written as one decimal or hex number reads too. Leading
    zeros are dropped first: `int` counts them against its 4,300-digit limit.
    """
    readings: set[int | None] = set()
    digits = text.removeprefix("0x")
    if digits and HEX.issuperset(digits):
        readings.add(int(digits.lstrip("0") or "0", 16))
    if text.isdigit():
        readings.add(int(text.lstrip("0") or "0"))
    return readings
