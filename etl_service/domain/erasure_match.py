"""Which dead letters hold a person's data: the matching behind `dead-letters erase`.

The person is described by lines on standard input (never on the command line, where every
local user could read them), one criterion a line:

    user_id=VALUE     the producer's user id, compared exactly (a long one also in NFKC form)
    ip=VALUE          compared in its canonical spelling (`::ffff:198.51.100.7` is `198.51.100.7`)
    device_id=VALUE   compared stripped, as the vault stores it

Blank lines and lines starting with `#` are ignored. A body matches when any criterion holds,
wherever in the body (etl_service/domain/body_strings.py lists the candidates: every string of a
JSON body at any depth, keys and list items included; every quoted literal of any other body,
escapes decoded, and its unquoted text):
- an ip given: a string, or an address-shaped token inside one, that the ETL's judge
  (`normalize_ip`) reads as that address: `::ffff:198.51.100.7`, `::ffff:c633:6407`,
  `0:0:0:0:0:ffff:198.51.100.7` and ` 198.51.100.7 ` are all `198.51.100.7`;
- a device id given: a string equal to it once normalised as the ETL does (stripped); in a
  body that is not JSON, also an unquoted occurrence not continued by a letter, digit, `-`, `_`
  or `.` on either side;
- a user id given: a string under a `user_id` key (at any depth, in a list too), stripped or not;
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
as sent by SQS's redrive) is matched too (`matches_event_id`): a letter with no kept body (too
large, ETL_DLQ_BODIES=discard) still names the person there when the producer built its event id
from their values. No other attribute is: `reason`, `reason_detail`, `source_message_id` and
`source_sent_timestamp` are written by the ETL from a closed set of reasons, parser messages,
SQS's message id and a time, never from a body's values (etl_service/adapters/sqs.py), and
reading them deleted other people's letters (user id `0` is in every not_json letter's
"at position 0"). In the event id, read NFKC and case-folded as groups of ASCII letters and
digits split by anything else:
- a user id (stripped; in the event id as written, case and all): the whole event id, or a
  whole run of groups when it is at least MIN_USER_ID_IN_GROUPS characters and not digits only
  (`login-alice42-17` holds `alice42`).
  A shorter or all-digit user id matches only the whole event id: `0`, `17`, `2026` or `000042`
  are any event id's counters and dates, and a deletion cannot be undone;
- a device id: its compact form (tokenvault_common.device_spellings, as the vault's purpose
  check reads it) equal to a whole run of groups joined (`evt-PIXEL7AGX7AS-1`, `pixel_7a_gx7as`,
  fullwidth letters) when it is at least MIN_DEVICE_ID_IN_GROUPS characters, else to the
  compact form of the whole event id;
- an ip: what tokenvault_common.ip_spellings reads as the person's canonical ip, in a whole
  group (`cb007107`, `3405803783`), a run of groups joined by `.` or `:` (`203.0.28935`,
  `0xcb.0.113.7`, `203.000.113.007`, IPv6), a dotted number (pii_text.dotted_numbers), or four
  decimal groups 0-255 joined by any other separator (`203_0_113_7`, `203-0-113-7`); read also
  percent-decoded (`203%2E0%2E113%2E7`). `203.0.113.77` is not `203.0.113.7`.
  A short form - a bare whole number (one group, no `0x`: `3405803783`, `cb007107`, or a
  39-digit IPv6), or 2-3 dotted numbers without a `0x` part (`203.0.28935`, `2.5` is 2.0.0.5
  to `inet_aton`) - is read as an address only on a letter whose body could not be read
  (`body_read` False: no kept body, or one that could not be opened), where the event id is
  all there is. On a letter whose body was read, the body decides, and the event id names an
  ip only in a full spelling (`full_ip_spelling`): four parts (`203.0.113.7`, `203-0-113-7`,
  `0313.0.0161.07`), IPv6, or with a `0x` part (`0xcb007107`, `203.0.0x7307`: a reader's
  address, never a counter, version or price). Every group of 8 to 39 digits is some address as
  a number, and every version, decimal or price some short form, so an event id's dates,
  epoch seconds, order numbers (`evt-20261203-000042` is 1.53.41.83 in decimal, 32.38.18.3 in
  hex) and versions (`build-2.5`, `app-3.12.1`, `price-12.99`) would delete other people's
  letters, irreversibly, by coincidence (attack 12, finding 4; attack 14, finding 8); and the
  ETL refuses an event id holding its own event's ip in those forms once it has parsed the
  event (etl_service/domain/own_values.py), so on such a letter the reading is only ever a
  coincidence (on one it could not parse, the ip is normally in the body it kept).

Errors name the line number and the rule, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from etl_service.domain.body_strings import keyed_strings
from tokenvault_common.device_spellings import compact_form
from tokenvault_common.ip_spellings import ips_spelled_by
from tokenvault_common.pii_text import dotted_numbers, undefanged, visible
from tokenvault_common.values import InvalidPiiValue, normalize_device_id, normalize_ip

KINDS = ("user_id", "ip", "device_id")
MAX_USER_ID_LENGTH = 128
MIN_USER_ID_IN_GROUPS = 6
"""A user id shorter than this (or of digits only) matches an event id only as the whole of it."""
DISTINCT_USER_ID = (
    "at least MIN_USER_ID_IN_GROUPS characters in NFKC form, stripped, a letter among them, and no key of an event"
    " or an envelope (FIELD_NAMES)"
)
"""Which user ids a body's string under any key is compared with (the rest: only under `user_id`)."""
SHARED_FIELDS = frozenset({"device_type", "locale", "app_version"})
"""The ETL's fields whose values many people share: a string under one is never read as a user id."""
FIELD_NAMES = frozenset({"user_id", "ip", "device_id", *SHARED_FIELDS, "format", "sealed_body", "key", "note"})
"""Keys of every event and every dead-letter envelope (keys are strings of a body too): never a distinct user id."""
MIN_DEVICE_ID_IN_GROUPS = 6
"""A device id whose compact form is shorter than this matches an event id only as the whole of it."""


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
        """True when a dead letter's event id names a value given (the rules: the module's docstring).

        `body_read`: whether the letter's body was read and matched too; if not, short forms of
        an ip in the event id (a bare whole number, 2-3 dotted numbers) are read as addresses as
        well (the event id is all there is).
        """
        if self._matches_string(None, event_id):
            return True
        folded = undefanged(event_id).casefold()
        runs = _GroupRuns(folded)
        if self.ips and (
            self._holds_ip(folded) or not self.ips.isdisjoint(_ips_in(folded, runs, short_forms=not body_read))
        ):
            return True
        if any(_names_device(compact_form(device), folded, runs) for device in self.device_ids):
            return True
        return any(_names_user(user_id.strip(), event_id) for user_id in self.user_ids)

    def _matches_string(self, key: str | None, text: str) -> bool:
        if key == "user_id" and (text in self.user_ids or text.strip() in self.user_ids):
            return True
        if self._distinct_user_ids and key not in SHARED_FIELDS and _folded(text) in self._distinct_user_ids:
            return True
        if self.device_ids and _judged(normalize_device_id, text) in self.device_ids:
            return True
        return bool(self.ips) and self._holds_ip(text)

    def _holds_ip(self, text: str) -> bool:
        if _judged(normalize_ip, text) in self.ips:
            return True
        return any(_judged(normalize_ip, candidate) in self.ips for candidate in _address_tokens(text))

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


MAX_IP_GROUPS = 10
"""The most groups an ip is written in (`0:0:0:0:0:ffff:198.51.100.7`): longer runs are not read."""
_NOT_A_GROUP = re.compile(r"([^0-9a-z]+)")
_DECIMAL_OCTET = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")


class _GroupRuns:
    """A case-folded text as groups of ASCII letters and digits, and what joins them."""

    def __init__(self, folded: str) -> None:
        pieces = _NOT_A_GROUP.split(folded)
        self.groups, self.joins = pieces[0::2], pieces[1::2]
        self.compact = "".join(self.groups)
        self.bounds = {0}
        end = 0
        for group in self.groups:
            end += len(group)
            self.bounds.add(end)

    def spells(self, compact: str) -> bool:
        """Whether some run of whole groups, joined without their separators, is `compact`."""
        start = self.compact.find(compact)
        while start >= 0:
            if start in self.bounds and start + len(compact) in self.bounds:
                return True
            start = self.compact.find(compact, start + 1)
        return False

    def ip_shaped_runs(self) -> set[str]:
        """Whole groups, runs joined by `.` or `:` only, and 4 decimal octets joined by any one separator (as dots)."""
        runs: set[str] = set()
        for first, group in enumerate(self.groups):
            run = group
            runs.add(run)
            for last in range(first + 1, min(len(self.groups), first + MAX_IP_GROUPS)):
                if self.joins[last - 1] not in (".", ":", "::"):
                    break
                run = f"{run}{self.joins[last - 1]}{self.groups[last]}"
                runs.add(run)
            quad, joins = self.groups[first : first + 4], self.joins[first : first + 3]
            if len(quad) == 4 and all(_DECIMAL_OCTET.fullmatch(o) for o in quad) and all(len(j) == 1 for j in joins):
                runs.add(".".join(quad))
        return runs


def _ips_in(folded: str, runs: _GroupRuns, short_forms: bool) -> set[str]:
    """The canonical ips the ip-shaped pieces of an event id spell (tokenvault_common.ip_spellings).

    A piece that is no full spelling of an address (`full_ip_spelling`: a bare whole number, 2-3
    dotted numbers without `0x`) is read only with `short_forms`.
    """
    found: set[str] = set()
    for piece in {*runs.ip_shaped_runs(), *dotted_numbers(folded)}:
        if piece and (short_forms or full_ip_spelling(piece)):
            found.update(ips_spelled_by(piece))
    return found


def full_ip_spelling(piece: str) -> bool:
    """Whether a case-folded ip-shaped piece is spelt as an address in full, not a short form.

    Full: IPv6 (a `:`), four dotted parts (`203.0.113.7`, `0313.0.0161.07`), or any part written
    with `0x` (`0xcb007107`, `203.0.0x7307`). Short: a bare whole number (`3405803783`,
    `cb007107`) and 2-3 dotted numbers (`203.0.28935`, `2.5`): what versions, decimals, prices,
    dates and counters are made of.
    """
    return ":" in piece or piece.count(".") == 3 or any(part.startswith("0x") for part in piece.split("."))


def _names_device(compact: str, folded: str, runs: _GroupRuns) -> bool:
    if not compact:
        return False
    if len(compact) < MIN_DEVICE_ID_IN_GROUPS:
        return compact_form(folded) == compact
    return runs.spells(compact)


def _names_user(user_id: str, event_id: str) -> bool:
    if not user_id:
        return False
    if event_id.strip() == user_id:
        return True
    if len(user_id) < MIN_USER_ID_IN_GROUPS or user_id.isdigit():
        return False
    pattern = r"(?<![^\W_])" + re.escape(user_id) + r"(?![^\W_])"
    return re.search(pattern, event_id) is not None


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
