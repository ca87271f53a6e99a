"""Text from the DLQ made fit for an operator's terminal."""

from __future__ import annotations

KEPT_IN_BODIES = frozenset("\n\t")
"""The unprintable characters a body is printed with as they are: its lines and indentation."""


def shown(text: str) -> str:
    """`text` fit for a terminal line, unprintable characters shown as `?`.

    Attributes are written by anyone who may send to the DLQ: line breaks or escape sequences
    must not forge lines or drive the operator's terminal.
    """
    return "".join(c if c.isprintable() else "?" for c in text)


def escaped(text: str) -> tuple[str, int]:
    r"""`text` fit for a terminal, its lines kept, and how many characters were escaped.

    Bodies are written by anyone who may send to the source queue (attack 17, finding 6): 8-bit
    controls (`\x9b` is CSI, `\x9d` OSC, a clipboard write in some terminals) and bidi overrides
    (`\u202e` shows 203.0.113.7 as 7.311.0.302) must neither drive the operator's terminal nor
    show one value as another. Every unprintable character but a line break or tab is written as
    its Python escape (`\x9b`, `\u202e`, `\U000e0041`), so the operator sees that it is there and
    which it is; the exact body is for `show --output FILE`.
    """
    parts = []
    count = 0
    for c in text:
        if c.isprintable() or c in KEPT_IN_BODIES:
            parts.append(c)
        else:
            count += 1
            parts.append(ascii(c)[1:-1])
    return "".join(parts), count
