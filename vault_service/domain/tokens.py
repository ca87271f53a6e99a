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
    pool = secrets.token_bytes(TOKEN_RANDOM_BYTES * count)
    prefix = f"{token_type.prefix}_"
    return [
        prefix + base64.urlsafe_b64encode(pool[start : start + TOKEN_RANDOM_BYTES]).rstrip(b"=").decode()
        for start in range(0, len(pool), TOKEN_RANDOM_BYTES)
    ]


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
