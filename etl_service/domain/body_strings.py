r"""Every string a dead letter's body holds, however it is written: the candidates `dead-letters erase` judges.

A refused body is whatever a producer sent: JSON with the event nested or wrapped in lists, an
array, JSON too deep for Python's parser, or not JSON at all. The erasure must find a person's
values in each, so this module lists what could be a value, each with the key it stands under:

- a JSON body: every string at any depth (walked iteratively, so depth does not matter), keys
  too, each with its nearest enclosing key (a list is transparent: `"ip": ["…"]` stands under
  `ip`); a string that is itself a JSON object or array is walked as well; every number too, as
  its text as written (a `JsonNumber`: `"user_id": 118` is `118`, a float of integral value also
  as that integer, `118.0` and `1.18e2` are `118` too), so that a user id or an IMEI sent as a
  number (schema drift: refused `wrong_type`) is found (attack 37, K1); erasure_match.py compares
  a number more narrowly than a string (under its own key, or long);
- any other body: every quoted string literal, its escapes decoded (`\u0075` is `u`), with the
  last key literal before it; and the text itself, `\u` escapes decoded, for unquoted values.

It only lists candidates; erasure_match.py judges them with the ETL's own normalisation. The ETL
reads a refused event's body the same way for the values under `ip` and `device_id` its event id
is compared with (`strings_under`: attack 37, K3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

_STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:)?', re.DOTALL)
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_SIMPLE_ESCAPE = re.compile(r'\\([/"\\])')
MAX_NESTED_DOCUMENTS = 64
"""How many strings holding JSON are walked in one body (a bound on work, not on depth)."""
MAX_INTEGRAL_DIGITS = 128
"""A float of integral value is also read as its integer up to this many digits (a user id's length)."""


class JsonNumber(str):
    """A JSON number of a body, as written (`118`, `118.0`, `1.18e2`): a value a producer sent as a number."""

    __slots__ = ()


def keyed_strings(body: str) -> tuple[list[tuple[str | None, str]], str | None]:
    """(key, string) pairs of `body`; and the unquoted text to scan too, for a body that is not JSON."""
    document = _parsed(body)
    if document is not _NOT_JSON:
        return list(_walk(document)), None
    return list(_literals(body)), decode_escapes(body)


def strings_under(body: str, keys: frozenset[str]) -> list[tuple[str, str]]:
    """(key, value): every string and number (a `JsonNumber`) of `body` that stands under one of `keys`.

    Under it at any depth, not only as the nearest key: `"device_id": {"id": "…"}`, `"ip": ["…"]`
    and `"ip": [{"v": 3405803783}]` all stand under their key (a key of `keys` met deeper takes
    over); every copy of a repeated key; a string holding JSON walked as `keyed_strings` walks it.
    Keys are not values here. A body that is not JSON: its quoted literals whose last key literal
    is one of `keys`. What the ETL compares a refused event's id with (validation.raw_own_values:
    attack 37, K3): the same reading of a body as `dead-letters erase`'s, not a second parser.
    """
    document = _parsed(body)
    if document is _NOT_JSON:
        return [(key, text) for key, text in _literals(body) if key in keys]
    return _values_under(document, keys)


def decode_escapes(text: str) -> str:
    r"""`text` with `\uXXXX` (surrogate pairs joined), `\/`, `\"` and `\\` escapes undone."""
    decoded = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    decoded = _SIMPLE_ESCAPE.sub(lambda m: m.group(1), decoded)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_NOT_JSON = object()


class _Object(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs: a repeated key keeps every occurrence."""


_DECODER = json.JSONDecoder(object_pairs_hook=_Object, parse_int=JsonNumber, parse_float=JsonNumber)
"""Built once: json.loads with a hook builds a new decoder on every call."""


def _parsed(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):  # not JSON, too deep
        return _NOT_JSON


def _walk(document: Any) -> Iterator[tuple[str | None, str]]:
    stack: list[tuple[str | None, Any]] = [(None, document)]
    nested = 0
    while stack:
        key, value = stack.pop()
        if isinstance(value, _Object):
            for inner_key, inner in value:
                yield None, inner_key
                stack.append((inner_key, inner))
        elif isinstance(value, list):
            stack.extend((key, item) for item in value)
        elif isinstance(value, JsonNumber):
            yield key, value
            integral = _integral(value)
            if integral is not None and integral != value:
                yield key, JsonNumber(integral)
        elif isinstance(value, str):
            yield key, value
            if nested < MAX_NESTED_DOCUMENTS and value.lstrip()[:1] in ("{", "["):
                inner = _parsed(value)
                if inner is not _NOT_JSON:
                    nested += 1
                    stack.append((key, inner))


def _values_under(document: Any, owners: frozenset[str]) -> list[tuple[str, str]]:
    """`strings_under` of a parsed body: `_walk`'s reading, only of what stands under a key of `owners`.

    A value outside them is not looked at unless it may hold such a key (an object, a list, a string
    holding JSON): the ETL reads every refused message so, and most of an event is outside them.
    """
    found: list[tuple[str, str]] = []
    stack: list[tuple[str | None, Any]] = [(None, document)]
    nested = 0
    while stack:
        owner, value = stack.pop()
        if isinstance(value, _Object):
            for key, inner in value:
                under = key if key in owners else owner
                if under is not None or isinstance(inner, list) or _may_hold_json(inner):
                    stack.append((under, inner))
        elif isinstance(value, list):
            stack.extend((owner, item) for item in value)
        elif isinstance(value, str):
            if owner is not None:
                found.append((owner, value))
                if isinstance(value, JsonNumber):
                    integral = _integral(value)
                    if integral is not None and integral != value:
                        found.append((owner, JsonNumber(integral)))
                    continue
            if nested < MAX_NESTED_DOCUMENTS and value.lstrip()[:1] in ("{", "["):
                inner = _parsed(value)
                if inner is not _NOT_JSON:
                    nested += 1
                    stack.append((owner, inner))
    return found


def _may_hold_json(value: Any) -> bool:
    """Whether `value` is a string that may hold a JSON object or array (walked: `keyed_strings`)."""
    return isinstance(value, str) and value.lstrip()[:1] in ("{", "[")


def _integral(number: str) -> str | None:
    """The integer a JSON number with a fraction or an exponent is (`118.0`, `1.18e2`: `118`), if it is one."""
    if not any(c in number for c in ".eE"):
        return None
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if not value.is_finite() or value.adjusted() >= MAX_INTEGRAL_DIGITS or value != value.to_integral_value():
        return None
    return str(int(value))


def _literals(body: str) -> Iterator[tuple[str | None, str]]:
    key: str | None = None
    for literal in _STRING_LITERAL.finditer(body):
        try:
            text = json.loads(f'"{literal.group(1)}"')
        except ValueError:  # an invalid escape or a raw control character: decode what can be
            text = decode_escapes(literal.group(1))
        if literal.group(2):  # followed by a colon: a key
            key = text
            yield None, text
        else:
            yield key, text
