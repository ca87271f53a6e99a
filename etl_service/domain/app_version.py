"""`app_version` kept without loss: a sortable integer plus the exact original text.

`"2.3.1"` -> 2_003_001 (major·1 000 000 + minor·1 000 + patch); missing parts count as 0, so
`"2.0"` and `"2.00"` share the integer 2_000_000 but keep distinct text. Each part has at most
3 digits, so the integer always fits the exercise's `integer` column.
"""

from __future__ import annotations

import re
from functools import lru_cache

_VERSION = re.compile(r"(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?", re.ASCII)
"""ASCII digits only: `int()` reads other scripts' digits (Arabic-Indic U+0661 is 1) and `$` accepts a
trailing newline, so the pattern must match the whole text with `fullmatch`."""
MAX_TEXT_LENGTH = 32


class InvalidAppVersion(ValueError):
    """Not of the form MAJOR[.MINOR[.PATCH]] with parts of 1 to 3 ASCII digits."""


@lru_cache(maxsize=4096)
def encode_app_version(text: str) -> int:
    """The sortable integer of a version string (cached: a fleet runs few distinct versions)."""
    match = _VERSION.fullmatch(text)
    if match is None:
        raise InvalidAppVersion("app_version must look like MAJOR[.MINOR[.PATCH]], each part 0-999")
    major, minor, patch = match.groups()
    return int(major) * 1_000_000 + (int(minor) * 1_000 if minor else 0) + (int(patch) if patch else 0)


def decode_app_version(number: int) -> str:
    """The canonical MAJOR.MINOR.PATCH of an encoded version (the text column keeps the original)."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"
