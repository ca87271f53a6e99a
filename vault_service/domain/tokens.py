"""Token text: `<type prefix>_<22 url-safe characters>` from 128 CSPRNG bits.

Tokens are random, never derived from the value, so a token reveals nothing about its value
even to someone holding every key.
"""

from __future__ import annotations

import re
import secrets

from vault_service.domain.token_types import TokenType

TOKEN_RANDOM_BYTES = 16
_TOKEN_PATTERN = re.compile(r"([a-z]+)_([A-Za-z0-9_-]{22})")


def new_token(token_type: TokenType) -> str:
    """A fresh random token of `token_type`."""
    return f"{token_type.prefix}_{secrets.token_urlsafe(TOKEN_RANDOM_BYTES)}"


def type_of_token(token: str) -> TokenType | None:
    """The type a token text announces, or None when the text is not a token."""
    match = _TOKEN_PATTERN.fullmatch(token)  # `$` would also accept a trailing newline
    return TokenType.from_prefix(match.group(1)) if match else None
