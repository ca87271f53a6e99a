"""Partial reveals for callers whose policy says `masked`."""

from __future__ import annotations

import ipaddress

from vault_service.domain.token_types import TokenType


def mask(token_type: TokenType, value: str) -> str:
    """`199.172.*.*` for IPv4, the first two groups for IPv6, `***-**-5928` for device ids."""
    if token_type is TokenType.IP:
        address = ipaddress.ip_address(value)
        if address.version == 4:
            first, second, _, _ = value.split(".")
            return f"{first}.{second}.*.*"
        groups = address.exploded.split(":")
        return f"{groups[0]}:{groups[1]}:*:*:*:*:*:*"
    visible = 4
    hidden = max(len(value) - visible, 0)
    return "".join("*" if ch.isalnum() else ch for ch in value[:hidden]) + value[hidden:]
