"""The kinds of PII the vault knows, and how a value of each kind is normalized.

Normalizing before fingerprinting makes equal values get equal tokens even when written
differently (`::FFFF:1.2.3.4` style spellings, surrounding blanks).
"""

from __future__ import annotations

import enum
import ipaddress

from tokenvault_common.ipv4 import is_canonical_ipv4
from vault_service.domain.errors import InvalidValue

MAX_VALUE_LENGTH = 256


class TokenType(enum.Enum):
    """A kind of PII; `prefix` starts every token of the kind."""

    IP = ("ip", "ip")
    DEVICE_ID = ("device_id", "dev")

    def __init__(self, type_name: str, prefix: str) -> None:
        self.type_name = type_name
        self.prefix = prefix

    @classmethod
    def from_name(cls, name: str) -> TokenType:
        """The type called `name` (as used in policies and the database)."""
        for member in cls:
            if member.type_name == name:
                return member
        raise InvalidValue(f"unknown token type {name!r}; known: {', '.join(m.type_name for m in cls)}")

    @classmethod
    def from_prefix(cls, prefix: str) -> TokenType | None:
        """The type whose tokens start with `prefix`, or None."""
        return _BY_PREFIX.get(prefix)


_BY_PREFIX = {member.prefix: member for member in TokenType}
"""Looked up once per token on Detokenize: a dict, not a walk over the enum."""


def _reject_control_characters(value: str, kind: str) -> None:
    if not value.isprintable():  # control, format, unassigned or separator characters (C*, Z* but space)
        raise InvalidValue(f"{kind} contains control or unprintable characters")


def normalize(token_type: TokenType, value: str) -> str:
    """The canonical spelling of `value` for `token_type`; InvalidValue if it is not one."""
    stripped = value.strip()
    if not stripped:
        raise InvalidValue(f"{token_type.type_name} value is empty")
    if len(stripped) > MAX_VALUE_LENGTH:
        raise InvalidValue(f"{token_type.type_name} value is longer than {MAX_VALUE_LENGTH} characters")
    _reject_control_characters(stripped, token_type.type_name)
    if token_type is TokenType.IP:
        if is_canonical_ipv4(stripped):
            return stripped
        try:
            address = ipaddress.ip_address(stripped)
        except ValueError:
            raise InvalidValue("ip value is not a valid IPv4 or IPv6 address") from None
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)
    return stripped
