"""Array literals for psycopg parameters.

Passing one string instead of a list lets Postgres parse the array instead of psycopg dumping
each element in Python (a third of the insert's CPU time).
"""

from __future__ import annotations

from collections.abc import Sequence


def bytea_array(values: Sequence[bytes | None]) -> str:
    """A bytea[] literal."""
    return "{" + ",".join('"\\\\x' + v.hex() + '"' if v is not None else "NULL" for v in values) + "}"


def text_array(values: Sequence[str]) -> str:
    """A text[] literal, every element quoted and escaped."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def int_array(values: Sequence[int]) -> str:
    """An int[] literal."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"
