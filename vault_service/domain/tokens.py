"""Token text: `<type prefix>_<22 url-safe characters>` from 128 CSPRNG bits.

Tokens are random, never derived from the value, so a token reveals nothing about its value
even to someone holding every key.
"""

from __future__ import annotations

import base64
import re
import secrets

from vault_service.domain.token_types import TokenType

TOKEN_RANDOM_BYTES = 16
_TOKEN_PATTERN = re.compile(r"([a-z]+)_([A-Za-z0-9_-]{22})")


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
