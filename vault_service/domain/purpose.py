"""What a purpose may hold: a case or ticket reference (`INC-4821`, `GDPR-2026-0042`), never PII.

The purpose is stored in the append-only audit log, where erasure cannot reach it; a value or
token written there would outlive its erasure. So a purpose that carries an IP address, a
token, an e-mail address, a hardware address, a device-id-like or other long number is refused,
saying why.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from vault_service.domain.errors import InvalidRequest
from vault_service.domain.token_types import TokenType

MAX_PURPOSE_LENGTH = 512

_PREFIXES = "|".join(t.prefix for t in TokenType)
_TOKEN = re.compile(
    r"(?i)(?<![a-z0-9])(?:" + _PREFIXES + r")(?:_[A-Za-z0-9_-]{3,}|[\s-]+[A-Za-z0-9_-]{16,})"
)  # a token, or the start of one (a token split by a space still names it), or its prefix joined otherwise
_TOKEN_BODY = re.compile(
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
)
"""A token's random part without its prefix: 20 or more URL-safe base64 characters mixing lower
case, upper case and digits (a reference like GDPR-2026-0042 is one case and short)."""
_IPV6_SPELLED = re.compile(r"(?i)(?<![0-9a-z])[0-9a-f]{1,4}(?:[^0-9a-z]{1,6}[0-9a-f]{1,4}){2,7}(?![0-9a-z])")
"""Groups of hex digits with any separators: 2001|db8||1, 2001 db8 abcd ..., 2001.db8.a.b.c.d.e.f."""
_DEFANGED_AT = re.compile(r"(?i)\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*")
_DEFANGED_DOT = re.compile(r"(?i)\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*")
_SEP = r"\D{1,6}"
"""Between the groups of a number: up to six characters that are not digits - dots, dashes,
colons, bars, blanks, letters, words ("203 dot 0 dot 113 dot 7"). Lists of separators let other
spellings of an address through twice; any non-digit is what a reader skips too."""
_IPV4_LIKE = re.compile(r"(?<!\d)0*\d{1,3}(?:" + _SEP + r"0*\d{1,3}){3}(?!\d)")  # 203.000.113.007, 203|0|113|7
_HEX_OCTETS = re.compile(r"(?i)0x[0-9a-f]{1,2}(?:\W{1,3}0x[0-9a-f]{1,2}){3}")  # 0xcb.0x0.0x71.0x7
_INVISIBLE = frozenset({"Mn", "Me", "Cf"})
"""Combining marks and format characters (variation selectors, joiners): they render as nothing
between digits, so they are dropped before the patterns are matched."""
_ISO_DATE_TIME = re.compile(
    r"(?<!\d)(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[ T](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:Z|[+-]\d{2}:?\d{2})?)?(?!\d)"
)
"""A date, or a date and time, in ISO form: a reference may carry one, and its groups of digits
would otherwise read as an address."""
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*")
_IPV6_DASHED = re.compile(r"(?i)[0-9a-f]{1,4}(?:-{1,2}[0-9a-f]{0,4}){2,7}")  # 2001-db8--1 (ipv6-literal form)
_HEX_INT = re.compile(r"(?i)0x[0-9a-f]{6,}")  # an address written as one hex number
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
_ID_NUMBER = re.compile(r"(?<!\d)\d{3}(?:" + _SEP + r")?\d{2}(?:" + _SEP + r")?\d{4}(?!\d)|\d{8,}")
_MAC = re.compile(
    r"(?i)(?<![0-9a-f])(?:[0-9a-f]{2}(?:[^0-9a-z][0-9a-f]{2}){5}|[0-9a-f]{4}[^0-9a-z][0-9a-f]{4}[^0-9a-z][0-9a-f]{4})(?![0-9a-f])"
)


def check_purpose(purpose: str) -> None:
    """Raise InvalidRequest with the reason unless `purpose` is a short printable reference without PII."""
    if not purpose.strip():
        raise InvalidRequest("purpose is required: say why (ticket, case or request id)")
    if not purpose.isprintable():
        raise InvalidRequest("purpose must be printable text: no control characters or line breaks")
    if len(purpose) > MAX_PURPOSE_LENGTH:
        raise InvalidRequest(f"purpose is longer than {MAX_PURPOSE_LENGTH} characters")
    reason = pii_in(purpose)
    if reason:
        raise InvalidRequest(
            f"purpose must not contain personal data ({reason}); give a case or ticket reference such as INC-4821"
        )
    if not _visible(purpose).isascii():
        raise InvalidRequest(
            "purpose must be plain ASCII text, a case or ticket reference such as INC-4821: other characters"
            " can make an address or a token look like something else"
        )


def pii_in(purpose: str) -> str | None:
    """What kind of personal data `purpose` seems to carry, or None.

    Checked on the NFKC form (fullwidth digits and dots read as ASCII) and deliberately broad:
    a reference like INC-4821 passes; anything shaped like an address, a token or an identifier
    number, however it is spelled, does not.
    """
    text = _DEFANGED_DOT.sub(".", _DEFANGED_AT.sub("@", _visible(purpose)))
    if _TOKEN.search(text) or _TOKEN_BODY.search(text):
        return "it holds a token"
    numbers = _ISO_DATE_TIME.sub(" ", text)
    if _IPV4_LIKE.search(numbers) or _HEX_INT.search(text) or _HEX_OCTETS.search(text):
        return "it holds an IP address"
    if any(_is_ip(m) for m in _IPV6_CANDIDATE.findall(text)):
        return "it holds an IP address"
    if any(_is_ip(m.replace("-", ":")) for m in _IPV6_DASHED.findall(text)):
        return "it holds an IP address"
    if any(_is_ipv6_spelled(m) for m in _IPV6_SPELLED.findall(numbers)):
        return "it holds an IP address"
    if _EMAIL.search(text):
        return "it holds an e-mail address"
    if _MAC.search(text):
        return "it holds a hardware address"
    if _ID_NUMBER.search(numbers):
        return "it holds an identifier-like number (8 or more digits, or ddd-dd-dddd)"
    return None


def _visible(purpose: str) -> str:
    """The NFKC form without combining marks and format characters (they render as nothing)."""
    text = unicodedata.normalize("NFKC", purpose)
    return "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)


def _is_ipv6_spelled(candidate: str) -> bool:
    """Whether hex groups with other separators (|, _, /, ., blanks) read as an IPv6 address of 3+ groups."""
    tight = re.sub(r"\s*([^0-9A-Za-z\s])\s*", r"\1", candidate)  # blanks around punctuation go
    if re.search(r"[^0-9A-Za-z\s]", tight):
        colons = re.sub(r"[^0-9A-Za-z]", ":", tight)
    else:  # blanks only: one is a colon, two or more the elided groups
        colons = re.sub(r"\s{2,}", "::", tight).replace(" ", ":")
    groups = [g for g in colons.split(":") if g]
    return len(groups) >= 3 and _is_ip(colons)


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate.split("%", 1)[0])  # a zone id (fe80::1%eth0) is still an address
    except ValueError:
        return False
    return True
