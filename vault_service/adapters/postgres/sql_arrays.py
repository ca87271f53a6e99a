"""Array literals for psycopg parameters.

Passing one string instead of a list lets Postgres parse the array instead of psycopg dumping
each element in Python (a third of the insert's CPU time). Each literal is built by joins over
the whole column where it can be (no Python step per element).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast


def bytea_array(values: Sequence[bytes | None]) -> str:
    """A bytea[] literal."""
    nulls = values.count(None)
    if nulls == len(values):  # empty, or a column of NULLs (next_fingerprint outside a key rotation)
        return "{" + ",".join(["NULL"] * nulls) + "}"
    if nulls:
        return "{" + ",".join('"\\\\x' + v.hex() + '"' if v is not None else "NULL" for v in values) + "}"
    return '{"\\\\x' + '","\\\\x'.join(map(bytes.hex, cast(Sequence[bytes], values))) + '"}'


def text_array(values: Sequence[str]) -> str:
    """A text[] literal, every element quoted and escaped."""
    if not values:
        return "{}"
    joined = '","'.join(values)
    if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):  # no element holds a quote: none to escape
        return '{"' + joined + '"}'
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def int_array(values: Sequence[int]) -> str:
    """An int[] literal."""
    text_of = {v: str(int(v)) for v in set(values)}  # columns of key ids: a few distinct values each
    return "{" + ",".join(map(text_of.__getitem__, values)) + "}"
