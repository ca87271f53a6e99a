"""Which dead letters hold a person's data: the matching behind `dead-letters erase`.

The person is described by lines on standard input (never on the command line, where every
local user could read them), one criterion a line:

    user_id=VALUE     the producer's user id, compared exactly
    ip=VALUE          compared in its canonical spelling (`::ffff:198.51.100.7` is `198.51.100.7`)
    device_id=VALUE   compared stripped, as the vault stores it

Blank lines and lines starting with `#` are ignored. A body matches when any criterion holds:
- a top-level `user_id`, `ip` or `device_id` field of a JSON object body equals a value given
  (every occurrence of a repeated key counts; ips and device ids through the one judge of a
  value, so any spelling the ETL would have tokenized as the erased value matches);
- anywhere in the text, whatever it is (not JSON, nested too deep, a field elsewhere): an ip or
  device id given, as a JSON string (`"198.51.100.7"`), or `"user_id": "VALUE"`.
Bare substrings are not enough: user id `42` must not match another person's `"n": 42`, nor
ip `198.51.100.7` the body of `198.51.100.77`.

Errors name the line number and the rule, never a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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
        return self._matches_fields(body) or self._matches_text(body)

    def _matches_fields(self, body: str) -> bool:
        fields = _top_level_fields(body)
        if fields is None:
            return False
        return (
            any(v in self.user_ids for v in fields.get("user_id", []) if isinstance(v, str))
            or any(_judged(normalize_ip, v) in self.ips for v in fields.get("ip", []))
            or any(_judged(normalize_device_id, v) in self.device_ids for v in fields.get("device_id", []))
        )

    def _matches_text(self, body: str) -> bool:
        if any(quoted in body for v in self.ips | self.device_ids for quoted in _json_strings(v)):
            return True
        return any(re.search(r'"user_id"\s*:\s*' + re.escape(q), body) for v in self.user_ids for q in _json_strings(v))


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


def _json_strings(value: str) -> set[str]:
    """`value` as a JSON string, in the spellings a producer writes (ASCII-escaped or not)."""
    return {json.dumps(value), json.dumps(value, ensure_ascii=False)}


def _collect(pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    collected: dict[str, list[Any]] = {}
    for key, value in pairs:
        collected.setdefault(key, []).append(value)
    return collected


def _top_level_fields(body: str) -> dict[str, list[Any]] | None:
    """Every value of each top-level key of a JSON object body; None for anything else."""
    try:
        document = json.loads(body, object_pairs_hook=_collect)
    except (ValueError, RecursionError):  # not JSON, too deep, an integer beyond Python's digit limit
        return None
    return document if isinstance(document, dict) else None
