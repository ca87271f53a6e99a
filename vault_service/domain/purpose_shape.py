"""What a purpose may hold, by its shape alone: a case or ticket reference, never PII (the checks and their reasons).

`check_purpose` refuses, saying why, a purpose that is not of the reference form or that
carries an IP address, a token, an e-mail or hardware address, a device-id-like or other long
number; what the purpose spells of a value or could name is read in the other `purpose_*`
modules. All are described, with what they keep out, in `vault_service.domain.purpose`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tokenvault_common.pii_text import (
    IP_ADDRESS,
    IPV4_BROAD,
    ISO_DATE_TIME,
    SEPARATOR,
    address_in,
    undefanged,
    visible,
)
from vault_service.domain.errors import InvalidRequest
from vault_service.domain.token_types import TokenType

WITHHELD_PURPOSE = ""
"""The purpose of an audit row that may not keep it: the call's purpose spells a value it does not
show in plain, or was not compared with every value of the call (refused before opening any, or
naming a value that exists but was not compared: erased, or it does not open). Empty: no client
can send an empty purpose (`check_purpose` refuses it, as the vault has since its first version),
so in a Detokenize or Erase row empty always means withheld; the row's hash covers it as before."""
WITHHELD_SHOWN = "(withheld by the vault)"
"""How audit reports (`audit who-saw`) show WITHHELD_PURPOSE: blanks and parentheses are not in the
reference form, so no purpose a client sent can read the same. It names no cause, so it is true of
every one (review 15, finding 10; review 16, finding 6): it spelled a value of the call; it was not
compared with every value of the call (a refused call, or one naming an erased token, whatever its
purpose said: `INC-4821` too); it may name a value or token stored for another call
(`stored_values`: often a legitimate reference that only looks like one), or is too long to look
up; an Erase's purpose has a stored value's shape; the client's identical purpose was withheld
before on this replica. The earlier "it spelled, or may have named, a stored value" was untrue of
a purpose withheld only for naming an erased token. README (purpose rules) lists the causes. A
purpose that names a stored value keeps its other groups, each run withheld shown as `(withheld)`
(`purpose_spans.WITHHELD_SPAN`; insider round 16, #2); it is shown as stored."""
MAX_PURPOSE_LENGTH = 64
"""Room for the longest usual references (`GDPR-2026-0042/INC-4821`, `SECOPS-2026-000123:step-2`)
with margin; little room for anything else, and a bound on the pieces `values_spelled_by` reads."""
REFERENCE_SEPARATORS = "-_/.:#"
REFERENCE_FORM = re.compile(rf"[A-Za-z][A-Za-z0-9]*(?:[{re.escape(REFERENCE_SEPARATORS)}][A-Za-z0-9]+)*", re.ASCII)
"""A case or ticket reference: letters and digits in groups joined by single separators, starting with a letter."""
WITHOUT_SEPARATORS = str.maketrans("", "", REFERENCE_SEPARATORS)
"""`str.translate` table dropping a reference's separators (its compact form)."""
SEGMENT_SEPARATORS = re.compile(rf"([{re.escape(REFERENCE_SEPARATORS)}])")
"""Splits a reference into its groups and the separators between them (`split` keeps them, at odd places).

The one definition of a group: the stored-value lookup (purpose_runs) names groups by their
index in this split and purpose_spans withholds those indices in its own; two lists of separators
would shift the indices apart and keep a stored value's run in clear (review 18, R18-7)."""
NOT_A_REFERENCE = (
    "purpose must be a case or ticket reference such as INC-4821 or GDPR-2026-0042: letters and digits,"
    " groups joined by one of - _ / . : #, starting with a letter, no blanks; not a description"
    " (names, addresses or the device or value concerned belong in the case, not in the purpose)"
)
INSTEAD = (
    "give the case or ticket reference alone, such as INC-4821 or GDPR-2026-0042: the person, device or address"
    " concerned belongs in the case, not in the purpose, which the audit log keeps for good"
)
"""What to write instead, ending every refusal of a purpose that holds a value (never the value itself)."""
HOLDS_OWN_VALUE = {
    TokenType.IP: "purpose must not contain the IP address this call reveals in plain (in any spelling)",
    TokenType.DEVICE_ID: (
        "purpose must not contain the device id this call reveals in plain (in any case, with any separators or none)"
    ),
}
"""Why a Detokenize is refused whose purpose spells a value it reveals in plain, by the value's type."""
DEVICE_ID = "it holds what looks like a device id or serial number: groups mixing letters and digits"
VAULT_REFERENCE = "it holds a token"
RANDOM_PART_OR_DEVICE_ID = (
    "it holds what may be a token's random part or a device id: 20 or more letters, digits, - or _"
    " mixing upper case, lower case and digits"
)
LOOSE_NUMBERS = "it holds four short numbers close together, which may spell an IP address"
HEX_OCTETS = "it holds hex octets of an IP address: four groups of two hex digits"
_HEX_OCTETS_REFUSED = re.compile(
    r"(?i)(?<![0-9a-z])[0-9a-f]{2}([^0-9a-z])[0-9a-f]{2}(?:\1[0-9a-f]{2}){2}(?![0-9a-z])", re.ASCII
)
"""Four groups of exactly two hex digits joined by one repeated separator (`CB-00-71-07`: 203.0.113.7),
refused as an address is (attack 14, finding 5). Not one-digit groups (review 15, finding 8):
`CHG-25-03-14-A`, `REQ-7-A-3-C` and `TEAM-A-B-C-D` are references in which a person sees no
address; `cb-0-71-7` is still compared with the call's own values (`values_spelled_by`)."""
_SERIAL_GROUP = re.compile(r"[A-Za-z]\d+[A-Za-z]")
"""Digits between letters in one group (G991B, ATK8Q7ZX, A125F): the shape of a model or serial number."""
_IPV4_BROAD_RUNS = re.compile(r"(?=(" + IPV4_BROAD.pattern + r"))")
"""Every run IPV4_BROAD reads, overlapping ones included (the broad reading finds only the first)."""
_NUMBER = re.compile(r"\d+")


class PurposeHoldsOwnValue(InvalidRequest):
    """The purpose of a Detokenize spells a value that call reveals in plain (masked or erased: withheld instead).

    The message names the kind of value (`token_type`), never the value: the caller is shown
    that value in plain by the same call without the purpose, so the kind tells it nothing new.
    """

    def __init__(self, token_type: TokenType) -> None:
        super().__init__(f"{HOLDS_OWN_VALUE[token_type]}: {INSTEAD}")


_PREFIXES = "|".join(t.prefix for t in TokenType)
_TOKEN = re.compile(
    r"(?i)(?<![a-z0-9])(?:" + _PREFIXES + r")(?:_[A-Za-z0-9_-]{3,}|[\s-]+[A-Za-z0-9_-]{16,})"
)  # a token, or the start of one (a token split by a space still names it), or its prefix joined otherwise
TOKEN_BODY = re.compile(
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
)
"""A token's random part without its prefix: 20 or more URL-safe base64 characters mixing lower
case, upper case and digits (a reference like GDPR-2026-0042 is one case and short)."""
_ID_NUMBER = re.compile(r"(?<!\d)\d{3}(?:" + SEPARATOR + r")?\d{2}(?:" + SEPARATOR + r")?\d{4}(?!\d)|\d{8,}")


def purpose_as_shown(purpose: str) -> str:
    """A Detokenize or Erase row's stored purpose as audit reports show it: WITHHELD_SHOWN for the withheld form."""
    return WITHHELD_SHOWN if purpose == WITHHELD_PURPOSE else purpose


def check_purpose(purpose: str) -> None:
    """Raise InvalidRequest with the reason unless `purpose` is a short printable reference without PII."""
    reason = unfit_purpose(purpose)
    if reason is not None:
        raise InvalidRequest(reason)


def unfit_purpose(purpose: str) -> str | None:
    """Why `purpose` is refused (a message a person can act on), or None when it is fit to keep."""
    if len(purpose) > MAX_PURPOSE_LENGTH:
        return (
            f"purpose is longer than {MAX_PURPOSE_LENGTH} characters: give a case or ticket reference such as INC-4821"
        )
    return _unfit_short_purpose(purpose)


@lru_cache(maxsize=1024)
def _unfit_short_purpose(purpose: str) -> str | None:
    """`unfit_purpose` of a purpose within the length limit, cached.

    A client's purposes repeat from call to call, and the detectors cost microseconds to tens of
    microseconds per call; only short purposes are kept (at most 1024 of 64 characters).
    """
    if not purpose.strip():
        return "purpose is required: say why (ticket, case or request id)"
    if not purpose.isprintable():
        return "purpose must be printable text: no control characters or line breaks"
    reason = pii_in(purpose)
    if reason:
        return f"purpose must not contain personal data ({reason}); {INSTEAD}"
    if not visible(purpose).isascii():
        return (
            "purpose must be plain ASCII text, a case or ticket reference such as INC-4821: other characters"
            " can make an address or a token look like something else"
        )
    if not REFERENCE_FORM.fullmatch(purpose):
        return NOT_A_REFERENCE
    return None


def pii_in(purpose: str) -> str | None:
    """What kind of personal data `purpose` seems to carry, or None.

    Checked on the NFKC form (fullwidth digits and dots read as ASCII) and deliberately broad:
    a reference like INC-4821 passes; anything shaped like an address (tokenvault_common.pii_text,
    read broadly), a token or an identifier number, however it is spelled, does not. What the
    broad reading alone takes for an IPv4 address is named for what it is (`_kind_of_loose_numbers`:
    `GDPR-2026-801-SM-G991B-ATK8Q7ZX` holds a device id, not an address).
    """
    text = undefanged(purpose)
    if _TOKEN.search(text):
        return VAULT_REFERENCE
    if TOKEN_BODY.search(text):
        return RANDOM_PART_OR_DEVICE_ID
    address = address_in(text, broad=True)
    if address == IP_ADDRESS and address_in(text, broad=False) != IP_ADDRESS:
        return _kind_of_loose_numbers(text)  # only the broad reading of four numbers took it for an ip
    if address:
        return address
    if _HEX_OCTETS_REFUSED.search(text):  # `CB-00-71-07` (attack 14, finding 5; review 15, finding 8)
        return HEX_OCTETS
    if _ID_NUMBER.search(ISO_DATE_TIME.sub(" ", text)):
        return "it holds an identifier-like number (8 or more digits, or ddd-dd-dddd)"
    return None


def _kind_of_loose_numbers(text: str) -> str:
    """What four numbers close together that only `IPV4_BROAD` reads as an ip are (its refusal's reason).

    IP_ADDRESS when one run of them reads as an address: every number 0-255, joined by one
    repeated separator or by separators without letters (`203x0x113x7`, `0203-0-113-7`). Else
    DEVICE_ID when one run has digits between letters in a group (`GDPR-2026-801-SM-G991B-ATK8Q7ZX`:
    801, 991, 8, 7 - a model and serial number, not an address). Else LOOSE_NUMBERS
    (`INC-801-991-8-7`). The purpose is refused in every case; only the reason differs.
    """
    numbers = ISO_DATE_TIME.sub(" ", text)  # as address_in reads them
    serial = False
    for run in _IPV4_BROAD_RUNS.finditer(numbers):
        if _reads_as_ipv4(run[1]):
            return IP_ADDRESS
        glued = numbers[max(run.start(1) - 1, 0) : run.end(1) + 1]  # a letter next to either end counts
        serial = serial or _SERIAL_GROUP.search(glued) is not None
    return DEVICE_ID if serial else LOOSE_NUMBERS


def _reads_as_ipv4(run: str) -> bool:
    """Whether four numbers joined by separators (a run of IPV4_BROAD) read as an IPv4 address to a person."""
    if any(int(number) > 255 for number in _NUMBER.findall(run)):
        return False
    separators = _NUMBER.split(run)[1:-1]
    return len(set(separators)) == 1 or not any(c.isalpha() for separator in separators for c in separator)
