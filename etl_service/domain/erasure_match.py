"""Which dead letters hold a person's data: the matching behind `dead-letters erase`.

The person is described by lines on standard input (never on the command line, where every
local user could read them), one criterion a line:

    user_id=VALUE     the producer's user id, compared exactly
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
- a user id given: a string under a `user_id` key (at any depth, in a list too), stripped or not.
Bare substrings are not enough: user id `42` must not match another person's `"n": 42`, nor
ip `198.51.100.7` the body of `198.51.100.77`. Matching errs towards deleting: a string equal
to the person's ip or device id matches under any key.

A dead letter's attributes (its event id, source message id, reason detail; any attribute of an
original SQS's redrive moved) are matched too, each as one string and as text (`matches_attribute`):
a letter with no kept body (too large, ETL_DLQ_BODIES=discard) still names the person there when
the producer built its event id from their device id or user id. In an attribute, a device id or
user id matches as a whole group - not continued by a letter or digit on either side
(`login-alice42-17` holds user id `alice42`, `evt-6d92078a-…` its device id), a device id in any
case (an IDFV is written in either) - and an ip as an address-shaped token, as in a body's text.

Errors name the line number and the rule, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from etl_service.domain.body_strings import keyed_strings
from tokenvault_common.values import InvalidPiiValue, normalize_device_id, normalize_ip

KINDS = ("user_id", "ip", "device_id")
MAX_USER_ID_LENGTH = 128


class CriteriaError(ValueError):
    """The criteria on standard input are unusable; the message names the line, never the value."""


@dataclass(frozen=True)
class Person:
    """What identifies one person's dead letters."""

    user_ids: frozenset[str]
    ips: frozenset[str]
    device_ids: frozenset[str]

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

    def matches_attribute(self, value: str) -> bool:
        """True when a dead letter's attribute value (event id, source message id, detail) names a value given."""
        if self._matches_string(None, value) or (self.ips and self._holds_ip(value)):
            return True
        if any(_grouped(device, value, ignore_case=True) for device in self.device_ids):
            return True
        return any(_grouped(user_id.strip(), value, ignore_case=False) for user_id in self.user_ids)

    def _matches_string(self, key: str | None, text: str) -> bool:
        if key == "user_id" and (text in self.user_ids or text.strip() in self.user_ids):
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


def _grouped(value: str, text: str, ignore_case: bool) -> bool:
    """`value` occurs in `text` as a whole group: no letter or digit right before or after it."""
    if not value:
        return False
    pattern = r"(?<![^\W_])" + re.escape(value) + r"(?![^\W_])"
    return re.search(pattern, text, re.IGNORECASE if ignore_case else 0) is not None


def _bounded(value: str, text: str) -> bool:
    """`value` occurs in `text` with no letter, digit, `-`, `_` or `.` right before or after it."""
    return re.search(r"(?<![\w.-])" + re.escape(value) + r"(?![\w.-])", text) is not None
