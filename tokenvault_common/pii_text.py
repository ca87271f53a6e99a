"""Does a short free text carry an address (IP, e-mail, hardware)? One detector for every service.

Two places take producer or operator free text that is stored where erasure cannot reach it
and where readers without a vault role see it:
- the vault's audit purposes (vault_service.domain.purpose), kept in the append-only audit log;
- the ETL's `event_id` attribute (etl_service.domain.messages), stored in user_logins,
  etl_quarantine and the DLQ's attributes.

Both ask `address_in`. It differs only in how broadly it reads separators:
- `broad=True` (purposes, which are human references such as INC-4821): any spelling a reader
  would still recognise as an address - 203|0|113|7, "203 dot 0 dot 113 dot 7", 203.000.113.007,
  MAC groups with any separator;
- `broad=False` (machine identifiers such as UUIDs, order numbers and counters, where groups of
  hex digits and dashes are the norm): four decimal octets of 0-255 joined by punctuation, IPv6
  as `ipaddress` reads it (also dashed or with other separators), and MACs in their standard
  forms (aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff). A UUID never matches.

E-mail addresses, defanged or percent-encoded spellings ("a [at] b [dot] org", a%40b.org),
addresses written as hex numbers and every dotted form `inet_aton` reads - short (203.0.29447),
with hex or octal parts (203.0.0x7307, 0313.0.0161.07), glued to letters (evt203.0.29447) - are
refused by both (dotted versions such as 1.2.3 and v1.2.345 are not: `_reads_as_a_version`). The text
is judged in NFKC form without invisible characters (`visible`), so fullwidth digits or joiners
between them do not hide anything.

`may_hold_an_address` is a one-regex pre-filter for the strict reading (the ETL's hot path): a
text it does not find suspect is certainly refused by nothing here (proof in its docstring).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import unquote

from tokenvault_common.ip_spellings import ips_spelled_by

IP_ADDRESS = "it holds an IP address"
EMAIL_ADDRESS = "it holds an e-mail address"
HARDWARE_ADDRESS = "it holds a hardware address"

_IPV6_SPELLED = re.compile(r"(?i)(?<![0-9a-z])[0-9a-f]{1,4}(?:[^0-9a-z]{1,6}[0-9a-f]{1,4}){2,7}(?![0-9a-z])")
"""Groups of hex digits with any separators: 2001|db8||1, 2001 db8 abcd ..., 2001.db8.a.b.c.d.e.f."""
_DEFANGED_AT = re.compile(r"(?i)\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*")
_DEFANGED_DOT = re.compile(r"(?i)\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*")
SEPARATOR = r"\D{1,6}"
"""Between the groups of a number, read broadly: up to six characters that are not digits - dots,
dashes, colons, bars, blanks, letters, words ("203 dot 0 dot 113 dot 7"). Lists of separators
let other spellings of an address through twice; any non-digit is what a reader skips too."""
IPV4_BROAD = re.compile(r"(?<!\d)0*\d{1,3}(?:" + SEPARATOR + r"0*\d{1,3}){3}(?!\d)")
"""Four numbers of 1-3 digits (leading zeros aside) joined by SEPARATOR: the broad reading of an
IPv4 address (203.000.113.007, 203|0|113|7, "203 dot 0 dot 113 dot 7"). It takes no account of
the numbers' range or of letters around them, so it also finds `801-SM-G991B-ATK8Q7` (a device
id); the vault's purposes tell the kinds apart for their refusal's reason
(vault_service.domain.purpose)."""
_OCTET = r"(?:25[0-5]|2[0-4]\d|[01]?\d?\d)"
_IPV4_STRICT = re.compile(r"(?<!\d)" + _OCTET + r"(?:[^0-9A-Za-z]{1,6}" + _OCTET + r"){3}(?!\d)")
"""Four octets of 0-255 (up to 3 digits each) joined by up to six characters that are neither
letters nor digits (punctuation, blanks): 203.0.113.7, 203-0-113-7, 203_0_113_7, 203 0 113 7,
203.000.113.007, and after a dot too (login.203.0.113.7). A UUID's groups (4+ characters) hold
no middle octet."""
_DOTTED_PART = r"(?:0[xX][0-9a-fA-F]++|\d++)"  # possessive: a part is never read as a shorter one
_DOTTED_NUMBER = re.compile(
    r"(?<![0-9])(?<![0-9]\.)(?:" + _DOTTED_PART + r"\.){1,3}" + _DOTTED_PART + r"(?![0-9]|\.[0-9])", re.ASCII
)
"""2-4 dotted numbers, each decimal, `0x` hex or octal: what `inet_aton` (and so `ping`, browsers)
reads as an IPv4 address - `203.0.29447`, `203.29447` (the last part fills the rest),
`203.0.0x7307`, `0xcb.29447`, `0313.0.29447`, `0xcb.0.113.7`, `0313.0.0161.07` - also glued to
letters (`evt203.0.29447`, `ip203.29447`, `203.0.29447x`) but not part of a longer dotted
number (`1.2.345.6`); a dot before or after one that is not (`login.203.0.29447.T7`) does not
hide it. One is refused when `inet_aton` reads it as an address of 1.0.0.0 or more
(`ips_spelled_by`), unless it reads as a version (`_reads_as_a_version`)."""
_HEX_OCTETS = re.compile(r"(?i)0x[0-9a-f]{1,2}(?:\W{1,3}0x[0-9a-f]{1,2}){3}")  # 0xcb.0x0.0x71.0x7
_INVISIBLE = frozenset({"Mn", "Me", "Cf"})
"""Combining marks and format characters (variation selectors, joiners): they render as nothing
between digits, so they are dropped before the patterns are matched."""
ISO_DATE_TIME = re.compile(
    r"(?<!\d)(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[ T](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:Z|[+-]\d{2}:?\d{2})?)?(?!\d)"
)
"""A date, or a date and time, in ISO form: a reference may carry one, and its groups of digits
would otherwise read as an address."""
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*")
_IPV6_DASHED = re.compile(r"(?i)[0-9a-f]{1,4}(?:-{1,2}[0-9a-f]{0,4}){2,7}")  # 2001-db8--1 (ipv6-literal form)
_HEX_INT = re.compile(r"(?i)0x[0-9a-f]{6,}")  # an address written as one hex number
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\W\d_]{2,}")
"""local@domain.tld, the top-level domain in any script's letters (example.org, example.рф)."""
_MAC_BROAD = re.compile(
    r"(?i)(?<![0-9a-f])(?:[0-9a-f]{2}(?:[^0-9a-z][0-9a-f]{2}){5}|[0-9a-f]{4}[^0-9a-z][0-9a-f]{4}[^0-9a-z][0-9a-f]{4})(?![0-9a-f])"
)
_MAC_STRICT = re.compile(
    r"(?i)(?<![0-9a-f])(?:[0-9a-f]{2}([^0-9a-z])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}"
    r"|[0-9a-f]{4}([.: ])[0-9a-f]{4}\2[0-9a-f]{4})(?![0-9a-f])"
)
"""Six pairs of hex digits joined by one repeated separator (aa:bb:.., aa-bb-.., aa.bb.., aa_bb..,
aa bb ..), or three quads joined by a repeated dot, colon or blank (aabb.ccdd.eeff). Quads joined
by dashes or underscores are not refused: a UUID holds three, and ids of hex groups are common."""


def visible(text: str) -> str:
    """The NFKC form without combining marks and format characters (they render as nothing)."""
    if text.isascii():  # NFKC leaves ASCII as it is, and no ASCII character is a mark or a format character
        return text
    normalized = unicodedata.normalize("NFKC", text)
    return "".join(c for c in normalized if unicodedata.category(c) not in _INVISIBLE)


def undefanged(text: str) -> str:
    """`visible(text)`, percent-decoded, with "[at]"/"(dot)"-style spellings read as "@" and "."."""
    if "%" in text:
        text = unquote(text)
    return _DEFANGED_DOT.sub(".", _DEFANGED_AT.sub("@", visible(text)))


def address_in(text: str, broad: bool) -> str | None:
    """What kind of address `text` seems to carry (IP_ADDRESS, EMAIL_ADDRESS, HARDWARE_ADDRESS), or None.

    `text` is expected in the form `undefanged` returns; see the module docstring for `broad`.
    """
    numbers = ISO_DATE_TIME.sub(" ", text)
    ipv4 = IPV4_BROAD if broad else _IPV4_STRICT
    if ipv4.search(numbers) or _HEX_INT.search(text) or _HEX_OCTETS.search(text):
        return IP_ADDRESS
    if "." in text and any(_reads_as_an_address(text, m) for m in _DOTTED_NUMBER.finditer(text)):
        return IP_ADDRESS
    if any(_is_ip(m) for m in _IPV6_CANDIDATE.findall(text)):
        return IP_ADDRESS
    if any(_may_be_ipv6(c) and _is_ip(c) for c in (m.replace("-", ":") for m in _IPV6_DASHED.findall(text))):
        return IP_ADDRESS
    if any(_is_ipv6_spelled(m) for m in _IPV6_SPELLED.findall(numbers)):
        return IP_ADDRESS
    if _EMAIL.search(text):
        return EMAIL_ADDRESS
    if (_MAC_BROAD if broad else _MAC_STRICT).search(text):
        return HARDWARE_ADDRESS
    return None


_SUSPECT_AFTER_A_SEPARATOR = re.compile(
    r"[-_](?:"  # every branch starts at a "-" or "_", which lets the engine skip to them
    r"[-_]"  # (3) two separators in a row
    r"|\d{1,3}[-_]\d{1,3}[-_]\d"  # (4) two short numbers between single separators, then a digit
    r"|[0-9A-Fa-f]{1,4}(?:[-_][0-9A-Fa-f]{1,4}){3}[-_]"  # (5) four short hex groups between single separators
    r"|\d\d-\d\d(?!\d)"  # (6) the month and day of an ISO date
    r")"
)


def may_hold_an_address(text: str) -> bool:
    """False only when `address_in(undefanged(text), broad=False)` is certainly None: a cheap pre-filter.

    Two string scans and one regex search, no Python loop: the usual opaque ids (UUIDs, ULIDs,
    counters, order-evt-000042, gen-42-5000-0000012) are not suspect and skip the detector, whose
    cost is tens of microseconds.

    Suspect: (1) a character other than ASCII letters, digits, "-" and "_"; (2) "0x" or "0X";
    (3)-(6) the separator-led groups of _SUSPECT_AFTER_A_SEPARATOR.

    Why it is sound (every text the strict detector refuses is suspect here). A text that is not
    suspect under (1) is ASCII letters, digits, "-" and "_" only, so `undefanged` returns it as it
    is (no "%" to decode, no bracket of a defanged spelling, nothing NFKC or `visible` changes), and:
    - an e-mail address needs "@", a colon-form IPv6 address (_IPV6_CANDIDATE) ":", and a MAC
      written as three quads "." ":" or a blank: all (1);
    - a hex number or hex octets need "0x" or "0X": (2);
    - an `inet_aton` short form (203.0.29447) needs ".": (1);
    - four octets (_IPV4_STRICT) are o1 s o2 s o3 s o4, each s a run of "-"/"_": a run of two is (3),
      else the separator before o2, o2 and o3 (1-3 digits each) with theirs, and the first digit of
      o4 are (4);
    - a dashed or spelled IPv6 (_IPV6_DASHED, _IPV6_SPELLED) passes `_may_be_ipv6` only with an
      elided group, which is two separators in a row (3), or with eight hex groups of 1-4 digits
      joined by single separators, whose six middle groups give (5);
    - a MAC of six pairs joined by "-" or "_" has four middle pairs between separators: (5);
    - the ISO dates the detector blanks out before matching numbers (the blank could join the
      groups on both sides of a date into a match) hold "-MM-DD" and no digit after it (a date
      with a time has ":"): (6).
    A canonical UUID is never suspect: its groups are 8-4-4-4-12 characters (no short number, at
    most three middle groups), so it always takes the fast path.
    """
    if not (text.isascii() and text.replace("-", "").replace("_", "").isalnum()):  # (1)
        return True
    if "0x" in text or "0X" in text:  # (2)
        return True
    return _SUSPECT_AFTER_A_SEPARATOR.search(text) is not None


def dotted_numbers(text: str) -> list[str]:
    """The 2-4 dotted numbers (decimal, `0x` hex or octal parts) in `text` that `inet_aton` may read as an address."""
    return [m[0] for m in _DOTTED_NUMBER.finditer(text)] if "." in text else []


def _reads_as_an_address(text: str, dotted: re.Match[str]) -> bool:
    """Whether `dotted` (a match of _DOTTED_NUMBER in `text`) is an address to a reader and not a version."""
    return not _reads_as_a_version(text, dotted) and bool(ips_spelled_by(dotted[0]))


def _reads_as_a_version(text: str, dotted: re.Match[str]) -> bool:
    """Whether decimal dotted numbers read as a version rather than as the address `inet_aton` makes of them.

    A version (`1.2.3`, `release-10.2`, `2026.12.03`): 2-3 decimal parts, none whose octal reading
    differs from the decimal one (`0313` is 203 to `inet_aton`, `05` is 5 either way), the last at
    most 255 (`1.2.3` is 1.2.0.3 to `inet_aton`, but a version far more often). Decided knowingly: a
    version with a last part above 255 standing alone (`release-1.2.345`, `evt-3.14159`) is refused,
    for `inet_aton` reads it (1.2.1.89) as surely as `203.0.29447`; after a lone `v` (`v1.2.345`,
    `release-v1.2.345`, `build-V10.0.19045`) it is a version with any last part, but only when the
    v follows no letter or digit and the parts are 2-3 plain decimals without a leading zero
    (attack 11: `evt-V0313.0.0161.07`, `v0313.28935`, `build9v203.0.28935` are addresses). A hex
    part is never a version's.
    """
    parts = dotted[0].split(".")
    if any(part[1:2] in ("x", "X") for part in parts) or len(parts) > 3:
        return False
    if _after_a_lone_v(text, dotted.start()) and all(part == "0" or part[0] != "0" for part in parts):
        return True
    last = parts[-1].lstrip("0")
    return all(map(_same_in_octal, parts)) and len(last) <= 3 and int(last or "0") <= 255


def _after_a_lone_v(text: str, start: int) -> bool:
    """Whether `text[start]` follows a v or V after no letter or digit (`v1.2`, `release-v1.2`; not `9v1.2`)."""
    return start > 0 and text[start - 1] in "vV" and (start == 1 or not text[start - 2].isalnum())


def _same_in_octal(part: str) -> bool:
    """Whether `inet_aton` reads a decimal part as its decimal value: no leading 0, or one digit 0-7 after it."""
    return part[0] != "0" or part.lstrip("0") in ("", "1", "2", "3", "4", "5", "6", "7")


def _is_ipv6_spelled(candidate: str) -> bool:
    """Whether hex groups with other separators (|, _, /, ., blanks) read as an IPv6 address of 3+ groups."""
    tight = re.sub(r"\s*([^0-9A-Za-z\s])\s*", r"\1", candidate)  # blanks around punctuation go
    if re.search(r"[^0-9A-Za-z\s]", tight):
        colons = re.sub(r"[^0-9A-Za-z]", ":", tight)
    else:  # blanks only: one is a colon, two or more the elided groups
        colons = re.sub(r"\s{2,}", "::", tight).replace(" ", ":")
    groups = [g for g in colons.split(":") if g]
    return len(groups) >= 3 and _may_be_ipv6(colons) and _is_ip(colons)


def _may_be_ipv6(colons: str) -> bool:
    """Whether hex groups joined by colons (no dots) can be an IPv6 address at all.

    Without an IPv4 tail one needs an elided group ("::") or exactly eight groups (seven colons).
    Checked before `ipaddress`, whose refusals (exceptions) cost microseconds each.
    """
    return "::" in colons or colons.count(":") == 7


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate.split("%", 1)[0])  # a zone id (fe80::1%eth0) is still an address
    except ValueError:
        return False
    return True
