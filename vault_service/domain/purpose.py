"""What a purpose may hold: a case or ticket reference (`INC-4821`, `GDPR-2026-0042`), never PII.

The purpose is stored in the append-only, hash-chained audit log, where erasure cannot reach it:
a value or token written there outlives its erasure, and removing it later breaks the chain. So:

- a purpose has the form of a reference (`REFERENCE_FORM`): ASCII letters and digits in groups
  joined by one of `- _ / . : #`, starting with a letter, at most 64 characters. No blanks, so
  no free text: a name, a street address or "device SM-..." does not fit;
- a purpose that carries an IP address, a token, an e-mail address, a hardware address, a
  device-id-like or other long number is refused, saying why (checked first, for that reason):
  the reason names the kind of value it seems to hold - four numbers that only the broad reading
  of an address takes together are an IP address, a device id or loose numbers according to their
  range and the letters around them (`_kind_of_loose_numbers`) - never the value, and every
  reason ends in what to write instead (`INSTEAD`: the case reference alone); a token the call
  names is found also when split by separators into short pieces (`check_names_no_token_of`);
- a purpose that spells one of the values the very call reveals or erases (`values_spelled_by`;
  compared in vault_service.service.revealing) is never stored: a plain reveal of it is refused,
  a masked reveal or an erasure is audited without its purpose (a refusal would confirm a guess);
- a purpose that was not compared with every value of the call (a refused call opens nothing;
  an erased token's value is gone; a stored value may not open) is not stored either: it is
  withheld (`WITHHELD_PURPOSE`, empty; shown as `WITHHELD_SHOWN`), for nothing tells what it spells.
  A value of a type the client may not see or erase is opened only for the comparison; a string
  that is not a token, or a token never issued, names no value and withholds nothing.

A form cannot tell a name written as a reference (`CASE-1-Smith`) from a ticket; it keeps out
everything that needs blanks, and the checks above keep out what the vault can recognize.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

from tokenvault_common.ip_spellings import MIN_NUMBER_TO_SEARCH, ips_in_hex_groups, ips_spelled_by
from tokenvault_common.pii_text import (
    IP_ADDRESS,
    IPV4_BROAD,
    ISO_DATE_TIME,
    SEPARATOR,
    address_in,
    dotted_numbers,
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
WITHHELD_SHOWN = "(withheld by the vault: it spelled, or may have named, a stored value)"
"""How audit reports (`audit who-saw`) show WITHHELD_PURPOSE: blanks and parentheses are not in the
reference form, so no purpose a client sent can read the same. True of every cause and naming none
(review 15, finding 10): it spelled a value of the call; it was not compared with every value of
the call (refused, or naming an erased value), so it may have named one; it may name a value or
token stored for another call (`stored_values`: often a legitimate reference that only looks like
one), or is too long to look up. It never says the client wrote the value there."""
MAX_PURPOSE_LENGTH = 64
"""Room for the longest usual references (`GDPR-2026-0042/INC-4821`, `SECOPS-2026-000123:step-2`)
with margin; little room for anything else, and a bound on the pieces `values_spelled_by` reads."""
REFERENCE_SEPARATORS = "-_/.:#"
REFERENCE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_/.:#][A-Za-z0-9]+)*", re.ASCII)
"""A case or ticket reference: letters and digits in groups joined by single separators, starting with a letter."""
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
_SEGMENT_SEPARATORS = re.compile(r"([-_/.:#])")
_IP_JOINS = frozenset(".:")
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
MAX_WINDOWED_RUN = 64
"""A run longer than this is not windowed (a purpose within MAX_PURPOSE_LENGTH never has one): the
work per run is bounded by about 3 windows per character."""


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
_TOKEN_BODY = re.compile(
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
    `ips_in_hex_groups`, the ETL's reader of an event id too; attack 14, finding 5). A value
    revealed or erased is compared with this set (one or two membership tests per value:
    `vault_service.service.revealing`); it is derived once per
    distinct purpose (cached: a client's purposes repeat). At most 32 groups: at most 528 runs and
    as many compact forms, plus at most about 3 windows per character, a few kB; 64 purposes are
    kept.
    """
    folded = purpose.casefold()
    pieces = _SEGMENT_SEPARATORS.split(folded)
    groups, joins = pieces[0::2], pieces[1::2]
    spelled: set[str] = set()
    for first in range(len(groups)):
        run = compact = groups[first]
        ip_shaped = True
        for last in range(first, len(groups)):
            if last > first:
                run = f"{run}{joins[last - 1]}{groups[last]}"
                compact = f"{compact}{groups[last]}"  # a reference's groups are letters and digits only
                ip_shaped = ip_shaped and joins[last - 1] in _IP_JOINS
            spelled.add(run)
            spelled.add(compact)
            if ip_shaped:
                spelled.update(ips_spelled_by(run))
    for dotted in dotted_numbers(folded):
        spelled.update(ips_spelled_by(dotted))
    # Separators are not hex digits, so each run is inside a group; a whole group was read above.
    hex_runs = set(_HEX_RUN.findall(folded))
    for hex_run in hex_runs.difference(groups):
        spelled.update(ips_spelled_by(hex_run))
    spelled.update(_ipv4_windows(hex_runs, IPV4_HEX_WINDOWS, 16))
    spelled.update(ips_in_hex_groups(folded))
    spelled.update(_ipv4_windows(set(_DIGIT_RUN.findall(folded)), IPV4_DECIMAL_WINDOWS, 10))
    return frozenset(spelled)


MIN_STORED_DEVICE_ID = 8
"""The fewest characters (separators dropped) of a run looked up as another call's device id."""
_SERIAL_SHAPED = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*[0-9])(?![A-Za-z]+[0-9]+$)[A-Za-z0-9]+", re.ASCII)
"""A group mixing letters and digits otherwise than as a word and its number (`G991B`, `7A`,
`a1b2c3d4e5f60718`, `ATK8Q7ZX`; not `INC2026`, `Q3`, `step2`): the group of a model or serial."""
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

    At most 32 groups: a few hundred values for the longest purpose, a handful for a usual one.
    """
    pieces = _SEGMENT_SEPARATORS.split(purpose)
    groups, joins = pieces[0::2], pieces[1::2]
    serial = [_SERIAL_SHAPED.fullmatch(group) is not None for group in groups]
    device_ids: set[str] = set()
    ips: set[str] = set()
    for first in range(len(groups)):
        run = compact = groups[first]
        ip_joined, has_serial = True, serial[first]
        for last in range(first, len(groups)):
            if last > first:
                run = f"{run}{joins[last - 1]}{groups[last]}"
                compact = f"{compact}{groups[last]}"
                ip_joined = ip_joined and joins[last - 1] in _IP_JOINS
                has_serial = has_serial or serial[last]
            if ip_joined and last - first + 1 >= IP_CANDIDATE_GROUPS:
                ips.update(ips_spelled_by(run.casefold()))
            if has_serial and len(compact) >= MIN_STORED_DEVICE_ID:
                device_ids.update((run, compact, run.upper(), compact.upper(), run.lower(), compact.lower()))
    return StoredCandidates(frozenset(device_ids), frozenset(ips))


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


MIN_TOKEN_PIECE = 12
"""The shortest piece of a token's random part (separators `- _ / . : #` dropped) that a purpose
may not hold when the call names that token: 12 random characters name one token among any
number issued (62**12 choices), and no reference holds 12 of a random token's by chance."""
_WITHOUT_SEPARATORS = str.maketrans("", "", REFERENCE_SEPARATORS)
CALL_REFERENCE = "it holds a token this call names, or a piece of one (with separators or none)"


def check_names_no_token_of(purpose: str, tokens: Iterable[str]) -> None:
    """Raise InvalidRequest when `purpose` holds a token of the call, split by separators or not.

    `_TOKEN_BODY` finds one run of 20 token characters; a token's random part split by `.`, `:`,
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
    shorter than 20). So a purpose whose separator-free form holds a `_TOKEN_BODY` run (20 or more
    characters mixing upper case, lower case and digits) changing between them at least
    MIN_CLASS_CHANGES times is withheld, never refused (a refusal would tell nothing here, but
    a withhold needs no lookup): the cost is the purpose of a rare mixed-case reference.
    """
    compact = purpose.translate(_WITHOUT_SEPARATORS)
    if len(compact) < 20 or not _TOKEN_BODY.search(compact):
        return False
    classes = [_character_class(c) for c in compact]
    return sum(a != b for a, b in pairwise(classes)) >= MIN_CLASS_CHANGES


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
    if _TOKEN_BODY.search(text):
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
