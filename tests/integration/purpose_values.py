"""Values, tokens and audit-row counts of the tests of purposes naming a stored value.

Shared by test_purpose_stored_values.py and test_purpose_withheld_remembered.py: made-up device
ids no number detector reads, benchmarking-range ips (198.18.0.0/15, no person's value), the
etl-service's Tokenize of both, how many audit rows hold a text in their purpose, and an erasure
of an ip and a device split into two calls under a purpose naming the device.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import NamedTuple

import psycopg

from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
DEVICE, IP_TYPE = vault_pb2.TOKEN_TYPE_DEVICE_ID, vault_pb2.TOKEN_TYPE_IP


def letters_device_id() -> str:
    """A made-up device id of a common shape whose random part is letters only (no number detector fires)."""
    n = uuid.uuid4().int
    return "SM-G991B-" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(8))


def benchmarking_ip() -> str:
    """A random ip in 198.18.0.0/16 (of the benchmarking range), neither of its last two octets 0."""
    n = uuid.uuid4().int
    return f"198.18.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


def tokenized(stub_for: StubFor, items: list[tuple[vault_pb2.TokenType.ValueType, str]]) -> list[str]:
    """The tokens the etl-service's Tokenize gives `items` (type, value), in order."""
    request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=t, value=v) for t, v in items])
    return [str(r.token) for r in stub_for("etl-service").Tokenize(request, timeout=30).results]


def audit_rows_holding(env: dict[str, str], text: str) -> int:
    """How many audit rows (of any client, ever) hold `text` in their purpose, case-insensitively."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE lower(purpose) LIKE %s", (f"%{text.lower()}%",)
        ).fetchone()
    assert row is not None
    return int(row[0])


class SplitErasure(NamedTuple):
    """What an erasure of an ip and a device split into two calls left: see `erase_split_in_two`."""

    device: str
    erased: list[bool]
    officer_rows: list[tuple[str, str, str]]


def erase_split_in_two(env: dict[str, str], stub_for: StubFor, *, device_first: bool) -> SplitErasure:
    """A fresh ip and device tokenized, then erased one per call, both with the purpose `GDPR-2026-801-<device id>`.

    As the erase burst splits an erasure: the device's call first when `device_first`, else the
    ip's. Returns the device id, each call's `erased` in call order, and the privacy officer's
    audit rows (action, outcome, purpose) the two calls wrote.
    """
    device = letters_device_id()
    ip_token, device_token = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, device)])
    purpose = f"GDPR-2026-801-{device}"
    officer = stub_for("privacy-officer")
    before = last_audit_id(env)
    erased = [
        result.erased
        for token in ((device_token, ip_token) if device_first else (ip_token, device_token))
        for result in officer.Erase(vault_pb2.EraseRequest(tokens=[token], purpose=purpose), timeout=10).results
    ]
    return SplitErasure(device, erased, audit_rows_since(env, before, "privacy-officer"))
