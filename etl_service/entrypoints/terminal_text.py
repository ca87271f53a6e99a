"""Text from the DLQ made fit for an operator's terminal."""

from __future__ import annotations


def shown(text: str) -> str:
    """`text` fit for a terminal line, unprintable characters shown as `?`.

    Attributes are written by anyone who may send to the DLQ: line breaks or escape sequences
    must not forge lines or drive the operator's terminal.
    """
    return "".join(c if c.isprintable() else "?" for c in text)
