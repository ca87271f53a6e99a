"""Values no earlier test has tokenized, so that a test's token is its own.

The vault gives equal values equal tokens: a test that erases, reveals or counts the audit
rows of a token needs a value nobody else sent. Private-range addresses and made-up device ids
only (no person's value).
"""

from __future__ import annotations

import uuid

from tokenvault_api.v1 import vault_pb2


def fresh_value(token_type: vault_pb2.TokenType.ValueType) -> str:
    """A random value of `token_type`: an ip in 10.0.0.0/8, or a device id of the form 123-45-6789."""
    n = uuid.uuid4().int
    if token_type == vault_pb2.TOKEN_TYPE_IP:
        return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250}"
    return f"{n % 1000:03d}-{(n >> 10) % 100:02d}-{(n >> 20) % 10000:04d}"
