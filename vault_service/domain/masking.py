"""Partial reveals for callers whose policy says `masked`.

A masked value never shows more than its last four characters, and nothing at all of a value
shorter than eight (whose last four would be half of it or more). Separators stay in place, so
`593-47-5928` reads `***-**-5928` and `199.172.111.135` reads `***.***.***.135`.
"""

from __future__ import annotations

from vault_service.domain.token_types import TokenType

VISIBLE = 4
SHORTEST_SHOWN = 8
HIDDEN_SHORT = "********"


def mask(token_type: TokenType, value: str) -> str:
    """`value` with all but its last four characters hidden; all of it when shorter than eight.

    The same rule for every token type: what a masked reveal shows does not depend on the type.
    """
    del token_type  # one rule for every type
    if len(value) < SHORTEST_SHOWN:
        return HIDDEN_SHORT
    hidden = value[:-VISIBLE]
    return "".join("*" if ch.isalnum() else ch for ch in hidden) + value[-VISIBLE:]
