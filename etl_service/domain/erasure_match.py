"""Which dead letters hold a person's data: the matching behind `dead-letters erase`.

The person is described by lines on standard input (never on the command line, where every
local user could read them), one criterion a line:

    user_id=VALUE     the producer's user id, compared exactly (a long one also in NFKC form)
    ip=VALUE          compared in its canonical spelling (`::ffff:198.51.100.7` is `198.51.100.7`)
    device_id=VALUE   compared stripped, as the vault stores it

Blank lines and lines starting with `#` are ignored. A body matches when any criterion holds,
wherever in the body (etl_service/domain/body_strings.py lists the candidates: every string and
number of a JSON body at any depth, keys and list items included; every quoted literal of any
other body, escapes decoded, and its unquoted text):
- an ip given: a string, or an address-shaped token inside one, that the ETL's judge
  (`normalize_ip`) reads as that address: `::ffff:198.51.100.7`, `::ffff:c633:6407`,
  `0:0:0:0:0:ffff:198.51.100.7` and ` 198.51.100.7 ` are all `198.51.100.7`; read in NFKC form
  (fullwidth digits); or a full spelling `inet_aton` reads as it (`198.051.100.007`,
  `0xc6.51.100.7`, `0xc6336407`: four parts or a `0x` part) or four decimal groups joined by one
  repeated separator that is no letter or digit, read in decimal (`198.051.100.007`,
  `198,51,100,7`), not inside a longer run of groups (attack 37, K1). Under the `ip` key, where the
  producer meant an address, a string or a number in any form `inet_aton` or a reader takes
  (`3325256711`, `c6336407`, `198x51x100x7`); elsewhere a short form is any counter's or version's;
- a device id given: a string equal to it once normalised as the ETL does (stripped); in a
  body that is not JSON, also an unquoted occurrence not continued by a letter, digit, `-`, `_`
  or `.` on either side; a JSON number equal to it under `device_id`, or under any key when it has
  MIN_NUMBER_DEVICE_ID digits (an IMEI sent as a number: attack 37, K1);
- a user id given: a string or a JSON number (`"user_id": 118`, also `118.0`: attack 37, K1) under
  a `user_id` key (at any depth, in a list too), stripped or not; in a body that is not JSON also
  `user_id=VALUE`, `user_id: VALUE` and `<user_id>VALUE</user_id>`;
  and, for a user id that is unambiguous (DISTINCT_USER_ID: at least MIN_USER_ID_IN_GROUPS
  characters, a letter among them), a string equal to it under any key, compared in NFKC form
  without invisible characters (tokenvault_common.pii_text.visible, as event ids are read:
  fullwidth letters, a zero-width space) and stripped, case kept (user ids may tell case), and
  in a body that is not JSON also an unquoted occurrence bounded as a device id's. Schema drift
  (`userId`, `User_Id`, `uid`) is what usually makes a `missing_field` letter, and it holds the
  person's user id under that other key (attack 14, finding 6). Not under `device_type`,
  `locale` or `app_version`: their values are shared by many people (user id `android`). A
  shorter or letterless user id (`42`, `2026-12-03`), or one that is a key of every event or
  envelope (`locale`, `sealed_body`: keys are strings too), matches only under `user_id`:
  counters, dates, versions and those keys are in every body.
Bare substrings are not enough: user id `42` must not match another person's `"n": 42`, nor
ip `198.51.100.7` the body of `198.51.100.77`. Matching errs towards deleting: a string equal
to the person's ip or device id matches under any key.

A dead letter's event id (the `event_id` attribute a producer set, kept by the ETL or carried
as sent by SQS's redrive) is matched too, by its own rules (`matches_event_id`:
etl_service/domain/event_id_match.py); no other attribute is.

Errors name the line number and the rule, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from etl_service.domain.body_strings import JsonNumber, keyed_strings
from etl_service.domain.event_id_match import (
    MIN_USER_ID_IN_GROUPS,
    GroupRuns,
    full_ip_spelling,
    ips_in,
    names_device,
    names_user,
)
from tokenvault_common.device_spellings import compact_form
from tokenvault_common.ip_spellings import ips_in_decimal_groups, ips_spelled_by
from tokenvault_common.pii_text import dotted_numbers, undefanged, visible
from tokenvault_common.values import InvalidPiiValue, normalize_device_id, normalize_ip

KINDS = ("user_id", "ip", "device_id")
MAX_USER_ID_LENGTH = 128
DISTINCT_USER_ID = (
    "at least MIN_USER_ID_IN_GROUPS characters in NFKC form, stripped, a letter among them, and no key of an event"
    " or an envelope (FIELD_NAMES)"
)
"""Which user ids a body's string under any key is compared with (the rest: only under `user_id`)."""
SHARED_FIELDS = frozenset({"device_type", "locale", "app_version"})
"""The ETL's fields whose values many people share: a string under one is never read as a user id."""
FIELD_NAMES = frozenset({"user_id", "ip", "device_id", *SHARED_FIELDS, "format", "sealed_body", "key", "note"})
"""Keys of every event and every dead-letter envelope (keys are strings of a body too): never a distinct user id."""
MIN_NUMBER_DEVICE_ID = 12
"""A JSON number equal to a device id given matches under any key from this many digits (an IMEI has 15);
a shorter one only under `device_id`: counters, times and prices are numbers, and every body has some."""


class CriteriaError(ValueError):
    """The criteria on standard input are unusable; the message names the line, never the value."""


@dataclass(frozen=True)
class Person:
    """What identifies one person's dead letters."""

    user_ids: frozenset[str]
    ips: frozenset[str]
    device_ids: frozenset[str]
    _distinct_user_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    """The user ids given that are unambiguous (DISTINCT_USER_ID), folded: matched under any key."""

    def __post_init__(self) -> None:
        folded = {_folded(user_id) for user_id in self.user_ids}
        object.__setattr__(self, "_distinct_user_ids", frozenset(u for u in folded if _distinct(u)))

    def __repr__(self) -> str:
        return f"Person(<{len(self.user_ids)} user ids, {len(self.ips)} ips, {len(self.device_ids)} device ids>)"

    @property
    def criteria(self) -> int:
        """How many values were given."""
        return len(self.user_ids) + len(self.ips) + len(self.device_ids)

    def matches(self, body: str) -> bool:
        """True when `body` (a dead letter's original, or the SQS body as it is) holds any value given."""
        strings, unquoted = keyed_strings(body)
        if any(self._matches_string(key, text) for key, text in strings):
            return True
        return unquoted is not None and self._matches_unquoted(unquoted)

    def matches_event_id(self, event_id: str, *, body_read: bool) -> bool:
        """True when a dead letter's event id names a value given (the rules: event_id_match.py).

        `body_read`: whether the letter's body was read and matched too; if not, short forms of
        an ip in the event id (a bare whole number, 2-3 dotted numbers) are read as addresses as
        well (the event id is all there is).
        """
        if self._matches_string(None, event_id):
            return True
        folded = undefanged(event_id).casefold()
        runs = GroupRuns(folded)
        if self.ips and (
            self._holds_ip(folded) or not self.ips.isdisjoint(ips_in(folded, runs, short_forms=not body_read))
        ):
            return True
        if any(names_device(compact_form(device), folded, runs) for device in self.device_ids):
            return True
        return any(names_user(user_id.strip(), event_id) for user_id in self.user_ids)

    def _matches_string(self, key: str | None, text: str) -> bool:
        if isinstance(text, JsonNumber):
            return self._matches_number(key, text)
        if key == "user_id" and (text in self.user_ids or text.strip() in self.user_ids):
            return True
        if self._distinct_user_ids and key not in SHARED_FIELDS and _folded(text) in self._distinct_user_ids:
            return True
        if self.device_ids and _judged(normalize_device_id, text) in self.device_ids:
            return True
        return bool(self.ips) and self._holds_ip(text, under_ip_key=key == "ip")

    def _matches_number(self, key: str | None, number: JsonNumber) -> bool:
        """Whether a JSON number names the person (attack 37, K1), under its own key or, a device id, when long.

        A user id under `user_id`; a device id under `device_id`, or under any key from MIN_NUMBER_DEVICE_ID
        digits; an ip (any number `inet_aton` or a reader takes for one) under `ip` only.
        """
        if key == "user_id" and number in self.user_ids:
            return True
        if number in self.device_ids and (key == "device_id" or len(number.lstrip("-")) >= MIN_NUMBER_DEVICE_ID):
            return True
        return bool(self.ips) and key == "ip" and not self.ips.isdisjoint(ips_spelled_by(number))

    def _holds_ip(self, text: str, *, under_ip_key: bool = False) -> bool:
        shown = visible(text)  # fullwidth digits and dots read as ASCII, zero-width characters dropped
        if _judged(normalize_ip, shown) in self.ips:
            return True
        if any(_judged(normalize_ip, candidate) in self.ips for candidate in _address_tokens(shown)):
            return True
        return not self.ips.isdisjoint(_ips_spelled_in(shown.casefold(), under_ip_key))

    def _matches_unquoted(self, text: str) -> bool:
        if self.ips and self._holds_ip(text):
            return True
        if any(_bounded(device, text) for device in self.device_ids):
            return True
        if self._distinct_user_ids:
            shown = visible(text)
            if any(_bounded_outside_shared_fields(user_id, shown) for user_id in self._distinct_user_ids):
                return True
        return any(
            re.search(r'user_id"?\s*[:=]\s*\[?\s*(?:"' + re.escape(u) + '"|' + re.escape(u) + r"(?![^\s,;&}\]]))", text)
            or re.search(r"<user_id(?:\s[^<>]*)?>\s*" + re.escape(u) + r"\s*<", text)  # XML (attack 37, K1)
            for u in self.user_ids
        )


def read_person(lines: Iterable[str]) -> Person:
    """The criteria of `lines` (see the module's docstring); CriteriaError if a line is unusable."""
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        kind, equals, value = text.partition("=")
        kind = kind.strip()
        if not equals or kind not in KINDS:
            raise CriteriaError(f"line {number}: expected user_id=VALUE, ip=VALUE or device_id=VALUE")
        try:
            if kind == "ip":
                found[kind].add(normalize_ip(value))
            elif kind == "device_id":
                found[kind].add(normalize_device_id(value))
            else:
                found[kind].add(_user_id(value))
        except (InvalidPiiValue, CriteriaError) as error:
            raise CriteriaError(f"line {number}: {error}") from None
    person = Person(frozenset(found["user_id"]), frozenset(found["ip"]), frozenset(found["device_id"]))
    if not person.criteria:
        raise CriteriaError("no user_id=, ip= or device_id= line on standard input: nothing to look for")
    return person


def _user_id(value: str) -> str:
    if not value or not value.strip() or len(value) > MAX_USER_ID_LENGTH or not value.isprintable():
        raise CriteriaError(f"user_id must be 1 to {MAX_USER_ID_LENGTH} printable characters, as the ETL accepts it")
    return value


def _judged(judge: Any, value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(judge(value))
    except InvalidPiiValue:
        return value.strip()


_IPV4_TOKEN = re.compile(r"(?<!\d)(?<!\d\.)\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)")
_HEX_RUN = re.compile(r"[0-9A-Fa-f:.]+")


def _address_tokens(text: str) -> set[str]:
    """Address-shaped tokens of `text`: dotted quads, and runs of hex digits, colons and dots."""
    tokens = set(_IPV4_TOKEN.findall(text))
    for run in _HEX_RUN.findall(text):
        if run.count(":") < 2:
            continue
        tokens.update({run, run.rstrip("."), run.rstrip(":."), run.lstrip(":") if not run.startswith("::") else run})
    return tokens


_HEX_NUMBER = re.compile(r"(?<![0-9a-z.])0x[0-9a-f]+(?![0-9a-z.])")


def _ips_spelled_in(folded: str, under_ip_key: bool) -> set[str]:
    """The ips a case-folded string of a body spells in forms `ipaddress` does not read (attack 37, K1).

    Anywhere: a full spelling (`event_id_match.full_ip_spelling`: four dotted parts, `0x` parts) of
    what `inet_aton` reads (`203.000.113.007`, `0xcb.0.113.7`, `0xcb007107`), and four decimal groups
    joined by one repeated separator that is no letter or digit, each read in decimal, leading zeros
    and all (`203.000.113.042`, `203,0,113,7`), not inside a longer run of such groups. Under the
    `ip` key, where the producer meant an address, also the string whole in any form `inet_aton` or a
    reader takes (`3405803783`, `cb007107`, `203.0.28935`) and groups joined by letters (`203x0x113x7`).
    Short forms elsewhere are any number's or version's (threat-model.md, *Not deleted by coincidence*).
    """
    pieces = [*dotted_numbers(folded), *_HEX_NUMBER.findall(folded)] if "0x" in folded or "." in folded else []
    found = {ip for piece in pieces if full_ip_spelling(piece) for ip in ips_spelled_by(piece)}
    found.update(ips_in_decimal_groups(folded, letters=under_ip_key, bounded=True))
    if under_ip_key:
        found.update(ips_spelled_by(folded.strip()))
    return found


def _folded(text: str) -> str:
    """`text` as a user id is compared under any key: NFKC, without invisible characters, stripped; case kept."""
    return visible(text).strip()


def _distinct(folded_user_id: str) -> bool:
    """Whether a folded user id is unambiguous (DISTINCT_USER_ID) enough to be looked for under any key."""
    if len(folded_user_id) < MIN_USER_ID_IN_GROUPS or folded_user_id.casefold() in FIELD_NAMES:
        return False
    return any(c.isalpha() for c in folded_user_id)


_SHARED_FIELD_BEFORE = re.compile(r"(?:device_type|locale|app_version)['\"]?\s*[:=]\s*\[?\s*['\"]?\s*$")


def _bounded_outside_shared_fields(value: str, text: str) -> bool:
    """`value` occurs bounded (`_bounded`) in `text`, somewhere not as the value of a SHARED_FIELDS key."""
    for found in re.finditer(r"(?<![\w.-])" + re.escape(value) + r"(?![\w.-])", text):
        if not _SHARED_FIELD_BEFORE.search(text, max(0, found.start() - 40), found.start()):
            return True
    return False


def _bounded(value: str, text: str) -> bool:
    """`value` occurs in `text` with no letter, digit, `-`, `_` or `.` right before or after it."""
    return re.search(r"(?<![\w.-])" + re.escape(value) + r"(?![\w.-])", text) is not None
