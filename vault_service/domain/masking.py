"""Partial reveals for callers whose policy says `masked`.

A masked value never shows more than its last four characters, and nothing at all of a value
shorter than eight (whose last four would be half of it or more). The separators of the values the
vault holds stay in place - `-`, `.`, `:` and `_`, nothing else - so `593-47-5928` reads `***-**-5928` and
`199.172.111.135` reads `***.***.***.135`. Every other character is hidden, whatever it is: a device id
is any printable text, and keeping every non-alphanumeric character showed one made of symbols,
punctuation or combining marks in full (attack 56, A56-2: 35 of 35 characters of an id of ASCII symbols).
"""

from __future__ import annotations

from vault_service.domain.token_types import TokenType

VISIBLE = 4
SHORTEST_SHOWN = 8
HIDDEN_SHORT = "********"
SEPARATORS = frozenset("-.:_")
"""The characters a masked value shows in place (the dotted, colon and dashed forms of ips and device ids)."""


def mask(token_type: TokenType, value: str) -> str:
    """`value` with all but its last four characters hidden; all of it when shorter than eight.

    The same rule for every token type: what a masked reveal shows does not depend on the type.
    """
    del token_type  # one rule for every type
    if len(value) < SHORTEST_SHOWN:
        return HIDDEN_SHORT
    hidden = value[:-VISIBLE]
    return "".join(ch if ch in SEPARATORS else "*" for ch in hidden) + value[-VISIBLE:]
