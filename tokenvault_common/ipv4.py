"""Canonical dotted-quad IPv4: the fast path both services take before `ipaddress`."""

from __future__ import annotations

import re

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


def is_canonical_ipv4(text: str) -> bool:
    """Whether `text` is an IPv4 address exactly as `ipaddress` would print it (no leading zeros).

    A regex match, without the objects `ipaddress` builds: true for nearly every real value,
    so the slower parse is left for the rest.
    """
    return _CANONICAL_IPV4.fullmatch(text) is not None
