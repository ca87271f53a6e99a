"""Token text: `<type prefix>_<22 url-safe characters>` from 128 CSPRNG bits.

Tokens are random, never derived from the value, so a token reveals nothing about its value
even to someone holding every key.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence

from vault_service.domain.token_types import TokenType

TOKEN_RANDOM_BYTES = 16
_RANDOM_PART = "[A-Za-z0-9_-]{22}"
_TOKEN_PATTERN = re.compile(f"([a-z]+)_({_RANDOM_PART})")


def new_tokens(token_type: TokenType, count: int) -> list[str]:
    """`count` fresh random tokens of `token_type` (128 CSPRNG bits each), from one CSPRNG read."""
    return tokens_of(token_type, secrets.token_bytes(_STRIDE * count))


_STRIDE = TOKEN_RANDOM_BYTES + 2
"""Pool bytes a token: 18 bytes are 24 base64 characters exactly, so no token's characters straddle the next's."""


def tokens_of(token_type: TokenType, pool: bytes) -> list[str]:
    """The tokens made of the first 16 of each 18 bytes of `pool` (the other two are not used).

    Base64 of 16 bytes and two more is 24 characters; when the first of the two is zero, the
    first 22 are base64 of the 16 bytes alone (the 22nd character ends with four zero bits,
    where the padding would have started). So the pool, with the 17th of every 18 bytes zeroed, is
    encoded once and sliced, instead of encoded per token.
    """
    if len(pool) % _STRIDE:
        raise ValueError(f"a token pool is {_STRIDE} bytes a token, got {len(pool)} bytes")
    padded = bytearray(pool)
    padded[TOKEN_RANDOM_BYTES::_STRIDE] = bytes(len(pool) // _STRIDE)  # its top bits would end the 22nd character
    encoded = base64.urlsafe_b64encode(padded).decode()
    prefix = f"{token_type.prefix}_"
    return [prefix + encoded[start : start + 22] for start in range(0, len(encoded), 24)]


def type_of_token(token: str) -> TokenType | None:
    """The type a token text announces, or None when the text is not a token."""
    match = _TOKEN_PATTERN.fullmatch(token)  # `$` would also accept a trailing newline
    return TokenType.from_prefix(match.group(1)) if match else None


_ONE_TYPE_PATTERNS = [
    (member, re.compile(f"(?:{re.escape(member.prefix)}_{_RANDOM_PART}\n)*{re.escape(member.prefix)}_{_RANDOM_PART}"))
    for member in TokenType
]
"""Per type: a newline-joined run of well-formed tokens of that type, and nothing else."""


def types_of_tokens(tokens: Sequence[str]) -> list[TokenType | None]:
    """`type_of_token` of each token, in order.

    A call's tokens are usually all of one type: that case is checked with one regular
    expression over the tokens joined by newlines (no token can hold one, as the count of
    newlines shows), about a fifth of the cost of parsing each token; any other call is
    parsed token by token.
    """
    if tokens:
        joined = "\n".join(tokens)
        if joined.count("\n") == len(tokens) - 1:
            for token_type, pattern in _ONE_TYPE_PATTERNS:
                if pattern.fullmatch(joined):
                    return [token_type] * len(tokens)
    return list(map(type_of_token, tokens))
