"""The client's view of the vault's data: token types, revealed values, per-item errors."""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

import grpc

from tokenvault_api.v1 import vault_pb2


class TokenType(enum.Enum):
    """Kinds of PII the vault tokenizes; the value is the name used in policies and on the command line."""

    IP = "ip"
    DEVICE_ID = "device_id"

    @property
    def prefix(self) -> str:
        """What every token of this type starts with, before the `_`."""
        return _PREFIXES[self]

    @property
    def proto(self) -> vault_pb2.TokenType.ValueType:
        """The protobuf enum value."""
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: vault_pb2.TokenType.ValueType) -> TokenType | None:
        """The type of a protobuf enum value (None for UNSPECIFIED or unknown)."""
        return _FROM_PROTO.get(value)


_TO_PROTO: dict[TokenType, vault_pb2.TokenType.ValueType] = {
    TokenType.IP: vault_pb2.TOKEN_TYPE_IP,
    TokenType.DEVICE_ID: vault_pb2.TOKEN_TYPE_DEVICE_ID,
}
_FROM_PROTO: dict[vault_pb2.TokenType.ValueType, TokenType] = {v: k for k, v in _TO_PROTO.items()}


def token_types_by_number() -> dict[vault_pb2.TokenType.ValueType, TokenType]:
    """Every known TokenType by its protobuf number (a copy)."""
    return dict(_FROM_PROTO)


_PREFIXES = {TokenType.IP: "ip", TokenType.DEVICE_ID: "dev"}
_BY_PREFIX = {prefix: token_type for token_type, prefix in _PREFIXES.items()}
_TOKEN_PATTERN = re.compile(r"([a-z]+)_[A-Za-z0-9_-]{22}")


def type_of_token(text: str) -> TokenType | None:
    """The type a token announces (`ip_…`, `dev_…`), or None when `text` is not a token."""
    match = _TOKEN_PATTERN.fullmatch(text)
    return _BY_PREFIX.get(match.group(1)) if match else None


class Reveal(enum.Enum):
    """How a value was revealed to this caller."""

    PLAIN = "plain"
    MASKED = "masked"


_REVEAL_FROM_PROTO: dict[vault_pb2.Reveal.ValueType, Reveal] = {
    vault_pb2.REVEAL_PLAIN: Reveal.PLAIN,
    vault_pb2.REVEAL_MASKED: Reveal.MASKED,
}


def reveal_from_proto(value: vault_pb2.Reveal.ValueType) -> Reveal:
    """The reveal level of a protobuf enum value (masked when unknown: never assume plain)."""
    return _REVEAL_FROM_PROTO.get(value, Reveal.MASKED)


def reveal_levels_by_number() -> dict[vault_pb2.Reveal.ValueType, Reveal]:
    """Every known Reveal by its protobuf number (a copy); callers treat others as masked."""
    return dict(_REVEAL_FROM_PROTO)


class ItemError(NamedTuple):
    """Why one item of a batch failed; the rest of the batch is unaffected."""

    code: grpc.StatusCode
    message: str

    @classmethod
    def from_proto(cls, error: vault_pb2.ItemError) -> ItemError:
        """From the wire form (a google.rpc.Code number)."""
        return cls(_CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN), error.message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class Revealed(NamedTuple):
    """A value behind a token. Its repr never shows the value, so logging it leaks nothing."""

    token_type: TokenType | None
    value: str
    reveal: Reveal

    def __repr__(self) -> str:
        kind = self.token_type.value if self.token_type else "?"
        return f"Revealed({kind}, <{self.reveal.value} value redacted>)"


TokenOutcome = str | ItemError
"""A token, or why the value got none."""

DetokenizeOutcome = Revealed | ItemError
"""The revealed value, or why the token revealed nothing."""

EraseOutcome = ItemError | None
"""None when the value was erased, else why not (NOT_FOUND: its message ERASED_BEFORE or NEVER_ISSUED,
tokenvault_common/erase_outcomes.py)."""


class TokenColumn(NamedTuple):
    """The tokens of one value column: one per value in order ('' where it failed), errors by position."""

    tokens: list[str]
    errors: dict[int, ItemError]
