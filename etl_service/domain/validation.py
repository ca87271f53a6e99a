"""Judging one SQS message body: a valid LoginEvent, or a Rejection with a reason code.

Reasons name the field and the rule, never the value (they end up in the DLQ, the quarantine
table and logs). Unknown extra fields are ignored and not stored, so a producer adding a field
does not stop the pipeline and no unexpected PII is copied anywhere - whatever they hold, as
long as the body as a whole stays within the parser's bounds.

Parsing is bounded, and each bound is a reason, never an exception: the body's size
(`body_too_large`), its nesting (`too_deep`: more than MAX_DEPTH levels of arrays and objects,
where the json module would otherwise raise RecursionError near 1,000), and integer literals
(`number_too_large`: more digits than MAX_INT_DIGITS, where int() would raise ValueError).
The ip and device id are judged by the vault's own judge (tokenvault_common.values) and by
nothing else - its length limit counts the value without the blanks around it, which a check
of the raw text here would contradict.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from itertools import zip_longest
from typing import Any, NamedTuple

from etl_service.domain.app_version import MAX_TEXT_LENGTH, InvalidAppVersion, encode_app_version
from etl_service.domain.body_strings import strings_under
from etl_service.domain.own_values import MIN_DEVICE_ID_TO_SEARCH, own_field_in, own_value_in
from tokenvault_common.ip_spellings import ips_in_decimal_groups, ips_spelled_by
from tokenvault_common.ipv4 import is_canonical_ipv4
from tokenvault_common.pii_text import dotted_numbers, visible
from tokenvault_common.values import InvalidPiiValue, Rule, normalize_device_id, normalize_ip

MAX_BODY_BYTES = 16 * 1024
MAX_DEPTH = 32
MAX_INT_DIGITS = 4_300  # CPython's own limit for int(str); beyond it int() raises ValueError
DEFAULT_DEVICE_TYPES = frozenset({"android", "ios"})
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})  # control, format, surrogate, private, unassigned
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")

# field -> (max length, nullable) of the fields stored as they are; lengths follow the exercise's DDL.
FIELDS: dict[str, tuple[int, bool]] = {
    "user_id": (128, False),
    "device_type": (32, False),
    "locale": (32, True),
    "app_version": (MAX_TEXT_LENGTH, False),
}
CLEAR_TEXT_FIELDS = ("user_id", "locale", "app_version")
"""The producer's text stored in clear in user_logins, which must never hold the event's own ip or
device id (attack 23, F1: `_no_own_value_in_clear`). device_type is not among them: it is stored
only when it is one of the operator's device types (lowercased), so it carries nothing of the producer's."""
PII_FIELDS = ("ip", "device_id")
"""Tokenized, never stored: judged only by tokenvault_common.values, as the vault judges them."""
_REQUIRED = frozenset(FIELDS) | frozenset(PII_FIELDS)


class LoginEvent(NamedTuple):
    """A validated login event (still holding raw PII: never log it).

    A NamedTuple: one is built per message, at a third of a frozen dataclass's cost.
    """

    user_id: str
    device_type: str
    ip: str
    device_id: str
    locale: str | None
    app_version: str
    app_version_number: int

    def __repr__(self) -> str:
        return f"LoginEvent(device_type={self.device_type!r}, ip=<redacted>, device_id=<redacted>)"


class Reason:
    """The reason code of each refusal of a message as an event: a DLQ attribute and etl_quarantine.reason.

    Raised here, and by the batch (`invalid_event_id`, `vault_rejected_value`); REASONS lists them,
    and service/returned_letters.KNOWN_REASONS is built from it.
    """

    BODY_TOO_LARGE = "body_too_large"
    CONTROL_CHARACTER = "control_character"
    DUPLICATE_KEY = "duplicate_key"
    EMPTY_FIELD = "empty_field"
    FIELD_TOO_LONG = "field_too_long"
    INVALID_APP_VERSION = "invalid_app_version"
    INVALID_EVENT_ID = "invalid_event_id"
    INVALID_IP = "invalid_ip"
    INVALID_LOCALE = "invalid_locale"
    INVALID_UTF8 = "invalid_utf8"
    OWN_VALUE_IN_FIELD = "own_value_in_field"
    MISSING_FIELD = "missing_field"
    NOT_AN_OBJECT = "not_an_object"
    NOT_JSON = "not_json"
    NULL_FIELD = "null_field"
    NUMBER_TOO_LARGE = "number_too_large"
    TOO_DEEP = "too_deep"
    UNKNOWN_DEVICE_TYPE = "unknown_device_type"
    UNPARSEABLE = "unparseable"
    VAULT_REJECTED_VALUE = "vault_rejected_value"
    WRONG_TYPE = "wrong_type"


REASONS = frozenset(value for name, value in vars(Reason).items() if name.isupper())
"""Every code of Reason."""


class Rejection(ValueError):
    """Why a message is not a valid login event: `reason` is a stable code, `detail` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # C speed; a repeated key shows as a shorter dict
    if len(result) != len(pairs):
        key = _first_repeated_key(pairs)
        named = repr(key) if key in _REQUIRED else "an unknown field"  # an unknown key is the producer's free text
        raise Rejection(Reason.DUPLICATE_KEY, f"field {named} appears more than once")
    return result


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise Rejection(Reason.NUMBER_TOO_LARGE, f"body holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(text: str) -> None:
    """Refuse bodies nested deeper than MAX_DEPTH, before the recursive decoder sees them.

    Counting brackets is C speed; only a body with more brackets than the limit (never a real
    event) is walked, skipping over strings.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise Rejection(Reason.TOO_DEEP, f"body nests arrays or objects more than {MAX_DEPTH} levels deep")
        elif bracket in "]}":
            depth -= 1


def _first_repeated_key(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return ""


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_int=_bounded_int)
"""Built once: json.loads with a hook constructs a new decoder on every call."""


def _decode(body: str | bytes, max_bytes: int) -> dict[str, Any]:
    raw = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else body
    if len(raw) > max_bytes:
        raise Rejection(Reason.BODY_TOO_LARGE, f"body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(Reason.INVALID_UTF8, "body is not valid UTF-8") from None
    _check_depth(text)
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise Rejection(Reason.NOT_JSON, f"body is not JSON ({error.msg} at position {error.pos})") from None
    except Rejection:  # raised by the hooks
        raise
    except (RecursionError, ValueError, MemoryError) as error:  # bounds above make these unexpected
        raise Rejection(Reason.UNPARSEABLE, f"body could not be parsed ({type(error).__name__})") from None
    if not isinstance(document, dict):
        raise Rejection(Reason.NOT_AN_OBJECT, f"body is a JSON {type(document).__name__}, not an object")
    return document


def _check_string(document: dict[str, Any], name: str) -> str | None:
    max_length, nullable = FIELDS[name]
    value = document[name]
    # The common case decided with C-speed string methods: a non-blank, printable str that
    # fits. isprintable() is true for nearly every real value; only the rest needs the
    # per-character look below (it accepts separators isprintable refuses, such as U+00A0).
    if type(value) is str and len(value) <= max_length and value.isprintable() and value and not value.isspace():
        return value
    if value is None and nullable:
        return None
    value = _string(name, value)
    if not value.strip():
        raise Rejection(Reason.EMPTY_FIELD, f"field {name!r} is empty")
    if len(value) > max_length:
        raise Rejection(Reason.FIELD_TOO_LONG, f"field {name!r} is longer than {max_length} characters")
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value):
        raise Rejection(Reason.CONTROL_CHARACTER, f"field {name!r} contains control or invalid characters")
    return value


def _string(name: str, value: Any) -> str:
    if value is None:
        raise Rejection(Reason.NULL_FIELD, f"field {name!r} is null")
    if not isinstance(value, str):
        raise Rejection(Reason.WRONG_TYPE, f"field {name!r} must be a string, not {type(value).__name__}")
    return value


def parse_login_event(
    body: str | bytes,
    device_types: frozenset[str] = DEFAULT_DEVICE_TYPES,
    max_bytes: int = MAX_BODY_BYTES,
    event_id: str | None = None,
) -> LoginEvent:
    """The LoginEvent in `body`, or Rejection.

    `event_id` (the message's attribute, checked by messages.check_event_id) is compared with the
    event's own ip and device id with the fields stored in clear: `invalid_event_id` when it holds one.
    """
    document = _decode(body, max_bytes)
    if not _REQUIRED.issubset(document):
        missing = [name for name in (*FIELDS, *PII_FIELDS) if name not in document]
        raise Rejection(Reason.MISSING_FIELD, f"missing required field(s): {', '.join(missing)}")
    user_id = _check_string(document, "user_id")
    device_type = _check_string(document, "device_type")
    ip, device_id = _string("ip", document["ip"]), _string("device_id", document["device_id"])
    locale = _check_string(document, "locale")
    app_version = _check_string(document, "app_version")
    assert user_id and device_type and app_version  # not nullable: checked above
    device_type = device_type.lower()
    if device_type not in device_types:
        raise Rejection(Reason.UNKNOWN_DEVICE_TYPE, f"device_type must be one of {', '.join(sorted(device_types))}")
    _judged("ip", normalize_ip, ip)  # judged as the vault judges it; sent as written (the vault normalizes)
    ip = ip.strip()
    device_id = _judged("device_id", normalize_device_id, device_id)
    if locale is not None and not _LOCALE.match(locale):
        raise Rejection(Reason.INVALID_LOCALE, "field 'locale' is not a language/region code such as 'RU' or 'en-US'")
    try:
        number = encode_app_version(app_version)
    except InvalidAppVersion as error:
        raise Rejection(Reason.INVALID_APP_VERSION, str(error)) from None
    try:
        _no_own_value_in_clear(ip, device_id, event_id, user_id, locale, app_version)
    except Rejection:
        _forget_versions()  # they hold this version, which may spell the refused event's own value
        raise
    return LoginEvent(user_id, device_type, ip, device_id, locale, app_version, number)


def _no_own_value_in_clear(
    ip: str, device_id: str, event_id: str | None, user_id: str, locale: str | None, app_version: str
) -> None:
    """Refuse an event whose event_id, user_id, locale or app_version holds its own ip or device id.

    The event_id's own-value check (domain/own_values.py), the same spellings, on every text stored
    in clear (attack 23, F1: the fields, `own_value_in_field`; the id, `invalid_event_id`, as before).
    One call for the id, user_id and locale, joined by a newline (which none holds: the id and the
    fields refuse unprintable characters): each call pays for its ip's spellings, so one call costs
    little more than the id's alone. An app_version (MAJOR[.MINOR[.PATCH]], 1-3 digits a part) can
    spell an ip only as a short dotted form `inet_aton` reads (`192.0.201` is 192.0.0.201): those of
    each version are read once (a fleet runs few versions). Only a refused event is looked at piece
    by piece, to name the field (never the value); user_id and locale are both named when only their
    joined text holds it (a value split across them is in clear all the same).
    """
    # A device id of 1-3 characters (found in the id only as a whole group) is no one's in a field.
    field_device = device_id if len(device_id.strip()) >= MIN_DEVICE_ID_TO_SEARCH else ""
    fields = {"user_id": user_id, "locale": locale or ""}
    if own_field_in(f"{event_id or ''}\n{user_id}\n{locale or ''}", ip, device_id) is not None:
        if event_id and (problem := own_value_in(event_id, ip, device_id)):
            raise Rejection(Reason.INVALID_EVENT_ID, problem)
        held = own_field_in(f"{user_id}\n{locale or ''}", ip, field_device)
        if held is None:
            return  # a short device id, or a value split between the id and a field (as the id alone allows)
        named = [name for name, value in fields.items() if own_field_in(value, ip, field_device)] or list(fields)
    elif _version_spells(app_version, ip) or own_field_in(app_version, "", field_device):
        held = "device_id" if own_field_in(app_version, "", field_device) else "ip"
        named = ["app_version"]
    else:
        return
    raise Rejection(
        Reason.OWN_VALUE_IN_FIELD,
        f"field(s) {', '.join(map(repr, named))} must not hold the event's own {held}; they are stored in clear",
    )


def _version_spells(app_version: str, ip: str) -> bool:
    """Whether `app_version` spells `ip` (canonical IPv4 as written, else as the vault normalizes it)."""
    spelled = _ips_in_version(app_version)
    if not spelled:
        return False
    try:
        return normalize_ip(ip) in spelled
    except InvalidPiiValue:
        return False


def _forget_versions() -> None:
    """Empty the version caches after an event is refused for its own ip or device id in clear: they hold its version.

    Their keys are versions, stored in clear - but not the version of such an event, which may spell its ip: kept, it
    and the ip it spells (`_ips_in_version`'s result) stayed in the ETL's memory past the batch and the person's
    erasure, for as long as a fleet's few versions left it there (review 37, R37-4; attack 34, E2 for the caches
    keyed by a value). Such an event is rare (a producer's bug), and lru_cache evicts no single key: both are
    emptied, and the next messages' few versions fill them again.
    """
    _ips_in_version.cache_clear()
    encode_app_version.cache_clear()


@lru_cache(maxsize=4096)
def _ips_in_version(app_version: str) -> frozenset[str]:
    """The ips the dotted numbers of an app_version spell to `inet_aton` (as the own-value check reads them)."""
    return frozenset(address for dotted in dotted_numbers(app_version) for address in ips_spelled_by(dotted))


OWN_VALUE_KEYS = frozenset({"ip", "device_id"})
MAX_OWN_VALUES = 32
"""A refused body holding more values under `ip` and `device_id` (a list of hundreds) is not compared value by
value: it loses its event id outright (harmless: the event is refused anyway, and is kept under its SQS id)."""


def raw_own_values(
    body: str | bytes, max_bytes: int = MAX_BODY_BYTES
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(ips, device ids): every value a refused body holds under `ip` and `device_id`, as the own-value check reads it.

    What a refused event's `event_id` is compared with (attack 19, finding 5): an event refused for
    another field must not keep an id that carries its own ip or device id. Read as `dead-letters
    erase` reads a body (`body_strings.strings_under`; attack 37, K3: only a string directly under
    the key was read, so an id holding a device id sent as a JSON number - an IMEI, the schema drift
    that gets the event refused `wrong_type` - or a value in a list, an object or a repeated key was
    kept in clear in etl_quarantine and the DLQ's attribute): strings and numbers at any depth under
    either key, every copy of a repeated key, also in a body that is no object or not valid JSON. A
    number as written (a float of integral value also as its integer); under `ip`, a number or a
    string that is no canonical IPv4 address also as every address it spells
    (`ip_spellings.ips_spelled_by`: 3405803783 is 203.0.113.7; the decimal octets of
    `203.000.113.042`: `ips_in_decimal_groups`). Nothing is judged here. ((), ()) for a body over
    `max_bytes` (refused `body_too_large`, not read); None past MAX_OWN_VALUES values (too many to compare).
    """
    if isinstance(body, bytes):
        if len(body) > max_bytes:
            return (), ()
        body = body.decode("utf-8", errors="replace")
    elif len(body) * 4 > max_bytes and len(body.encode("utf-8", errors="surrogatepass")) > max_bytes:
        return (), ()
    ips: dict[str, None] = {}
    device_ids: dict[str, None] = {}
    for key, value in strings_under(body, OWN_VALUE_KEYS):
        if key == "device_id":
            device_ids[value] = None
        else:
            ips[value] = None
            written = value.strip()
            if not is_canonical_ipv4(written):  # a number or another spelling: also the addresses it is
                shown = visible(written)
                ips.update(dict.fromkeys(ips_spelled_by(shown)))
                ips.update(dict.fromkeys(ips_in_decimal_groups(shown.casefold())))
        if len(ips) + len(device_ids) > MAX_OWN_VALUES:
            return None
    return tuple(ips), tuple(device_ids)


def own_value_in_body(event_id: str, body: str | bytes, max_bytes: int = MAX_BODY_BYTES) -> bool:
    """Whether a refused message's `event_id` carries an ip or device id its body holds (`raw_own_values`).

    Each value is compared as the event's own (`own_value_in`); a body of more than MAX_OWN_VALUES
    values drops the id uncompared.
    """
    values = raw_own_values(body, max_bytes)
    if values is None:
        return True
    ips, device_ids = values
    return any(own_value_in(event_id, ip, device) for ip, device in zip_longest(ips, device_ids, fillvalue=""))


_REASONS = {
    Rule.EMPTY: Reason.EMPTY_FIELD,
    Rule.TOO_LONG: Reason.FIELD_TOO_LONG,
    Rule.UNPRINTABLE: Reason.CONTROL_CHARACTER,
    Rule.NOT_AN_IP: Reason.INVALID_IP,
}


def _judged(name: str, judge: Callable[[str], str], value: str) -> str:
    """The value as the vault will judge it, or the Rejection for the rule it breaks."""
    try:
        normalized = judge(value)
    except InvalidPiiValue as error:
        raise Rejection(_REASONS[error.rule], f"field {name!r}: {error}") from None
    return normalized
