"""The kinds of PII the vault knows, and how a value of each kind is normalized.

Normalizing before fingerprinting makes equal values get equal tokens even when written
differently (`::FFFF:1.2.3.4` style spellings, surrounding blanks).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from tokenvault_common.ipv4 import all_canonical_ipv4
from tokenvault_common.values import InvalidPiiValue, normalize_device_id, normalize_ip
from vault_service.domain.errors import InvalidValue


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


def normalize(token_type: TokenType, value: str) -> str:
    """The canonical spelling of `value` for `token_type`; InvalidValue if it is not one.

    The rules are shared with the ETL (tokenvault_common.values), so both judge a value alike.
    """
    judge = normalize_ip if token_type is TokenType.IP else normalize_device_id
    try:
        return judge(value)
    except InvalidPiiValue as error:
        raise InvalidValue(str(error)) from None


def normalize_many(token_type: TokenType, values: Sequence[str]) -> tuple[list[str | InvalidValue], bool]:
    """`normalize()` of each value, in order (an invalid value's InvalidValue in its place), and whether all were valid.

    A batch of IPv4 addresses all written canonically (nearly every real batch) is checked in
    one pass and returned as sent; any other batch is judged value by value.
    """
    if token_type is TokenType.IP and all_canonical_ipv4(values):
        return list(values), True
    judged: list[str | InvalidValue] = []
    valid = True
    for value in values:
        try:
            judged.append(normalize(token_type, value))
        except InvalidValue as error:
            judged.append(error)
            valid = False
    return judged, valid
