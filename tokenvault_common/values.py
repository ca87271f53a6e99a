"""One judge of a PII value: what a valid ip and device id are, for the ETL and the vault alike.

The ETL validates a message before it asks the vault for tokens; if the two disagreed, a value
the ETL accepted would be refused by the vault (the message then quarantined as
`vault_rejected_value` instead of with its own reason). Both call these functions.

Decisions (each tested in tests/unit/test_validation.py):
- surrounding whitespace is not part of a value (stripped); a value that is only whitespace is
  empty; control characters (tab, newline, ...) are refused wherever they stand;
- a device id is at most 256 characters, every one printable (`str.isprintable`): control,
  format, unassigned and separator characters other than the ASCII space are refused, so
  U+00A0 and U+3000 inside an id are refused (at either end they are stripped as whitespace);
- an ip is an IPv4 or IPv6 address as `ipaddress` reads it, IPv4-mapped IPv6 counting as its IPv4;
  an IPv6 zone id (`fe80::1%eth0`) is refused: it names an interface of the sending host, means
  nothing elsewhere and is free text.
"""

from __future__ import annotations

import enum
import ipaddress
import unicodedata

from tokenvault_common.ipv4 import is_canonical_ipv4

MAX_VALUE_LENGTH = 256


class Rule(enum.Enum):
    """Which rule a value broke; callers turn it into their own reason code."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    UNPRINTABLE = "unprintable"
    NOT_AN_IP = "not_an_ip"


class InvalidPiiValue(ValueError):
    """A value that is not a valid ip or device id; the message names the kind, never the value."""

    def __init__(self, rule: Rule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _checked(value: str, kind: str) -> str:
    stripped = value.strip()
    if len(stripped) != len(value) and any(unicodedata.category(ch)[0] == "C" for ch in value):
        # str.strip() removes some control characters (tab, newline, U+001C-U+001F): they
        # are refused wherever they stand, not silently cut off.
        raise InvalidPiiValue(Rule.UNPRINTABLE, f"{kind} contains control or unprintable characters")
    if not stripped:
        raise InvalidPiiValue(Rule.EMPTY, f"{kind} value is empty")
    if len(stripped) > MAX_VALUE_LENGTH:
        raise InvalidPiiValue(Rule.TOO_LONG, f"{kind} value is longer than {MAX_VALUE_LENGTH} characters")
    if not stripped.isprintable():  # control, format, unassigned or separator characters (C*, Z* but space)
        raise InvalidPiiValue(Rule.UNPRINTABLE, f"{kind} contains control or unprintable characters")
    return stripped


def normalize_device_id(value: str) -> str:
    """The canonical device id (stripped); InvalidPiiValue if it is not one."""
    return _checked(value, "device_id")


def normalize_ip(value: str) -> str:
    """The canonical spelling of an ip (`::ffff:1.2.3.4` -> `1.2.3.4`); InvalidPiiValue if it is not one."""
    stripped = _checked(value, "ip")
    if is_canonical_ipv4(stripped):
        return stripped
    if "%" in stripped:
        raise InvalidPiiValue(Rule.NOT_AN_IP, "ip value carries an IPv6 zone id, which is not accepted")
    try:
        address = ipaddress.ip_address(stripped)
    except ValueError:
        raise InvalidPiiValue(Rule.NOT_AN_IP, "ip value is not a valid IPv4 or IPv6 address") from None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)
