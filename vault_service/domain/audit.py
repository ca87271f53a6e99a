"""Hash-chained audit records.

Each row's hash covers its fields and the previous row's hash, so changing, deleting or
reordering any row breaks every hash after it. Since migration 0006 the database computes the
chain itself (hash version 2, `vault.audit_row_hash`); rows written before keep version 1,
computed by the service. Both are verified here.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS_HASH = b"\x00" * 32
REVEAL_HASH_BYTES = 16
"""Length of the keyed hash kept per revealed or erased token (keyed BLAKE2b, see `revealing.reveal_hasher`)."""

# What json.dumps(fields, sort_keys=True, separators=(",", ":")) builds, made once: dumps
# with options constructs a new encoder on every call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class AuditEvent:
    """One audited action. Carries counts and type names, never values or token lists."""

    client: str
    action: str
    outcome: str
    item_count: int
    purpose: str = ""
    token_types: str = ""
    client_serial: str = ""
    client_cert_sha256: str = ""
    revealed: Sequence[bytes] = ()
    """Keyed hashes of the tokens revealed (see `who saw`), never the tokens themselves."""


@dataclass(frozen=True)
class AuditRecord:
    """An event as stored: with its id, time and chain hashes."""

    record_id: int
    at: datetime
    event: AuditEvent
    prev_hash: bytes
    row_hash: bytes
    hash_version: int = 2


def chain_hash(prev_hash: bytes, at: datetime, event: AuditEvent) -> bytes:
    """SHA-256 over the previous hash and a canonical encoding of this row's fields."""
    fields = {
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "client": event.client,
        "action": event.action,
        "purpose": event.purpose,
        "token_types": event.token_types,
        "item_count": event.item_count,
        "outcome": event.outcome,
    }
    canonical = _CANONICAL_JSON.encode(fields).encode()
    return hashlib.sha256(prev_hash + canonical).digest()


def _field(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">i", len(data)) + data


_BYTEA_OID = 17


def _array_send(values: Sequence[bytes]) -> bytes:
    """Postgres' binary form of a one-dimensional bytea[] without NULLs (`array_send`); b"" for none."""
    if not values:
        return b""
    header = struct.pack(">iiiii", 1, 0, _BYTEA_OID, len(values), 1)  # ndim, has-nulls, type, length, lower bound
    return header + b"".join(struct.pack(">i", len(v)) + v for v in values)


def chain_hash_v2(prev_hash: bytes, record_id: int, at: datetime, event: AuditEvent) -> bytes:
    """The database's row hash (migration 0006, `vault.audit_row_hash`), computed here to verify it."""
    fields = (
        str(record_id),
        at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        event.client,
        event.client_serial,
        event.client_cert_sha256,
        event.action,
        event.purpose,
        event.token_types,
        str(event.item_count),
        event.outcome,
    )
    revealed_digest = hashlib.sha256(_array_send(event.revealed)).digest()
    return hashlib.sha256(prev_hash + b"".join(_field(f) for f in fields) + revealed_digest).digest()


def record_hash(record: AuditRecord) -> bytes:
    """What `record.row_hash` must be, by the record's hash version."""
    if record.hash_version == 1:
        return chain_hash(record.prev_hash, record.at, record.event)
    return chain_hash_v2(record.prev_hash, record.record_id, record.at, record.event)


def first_broken_record(records: Iterable[AuditRecord]) -> int | None:
    """The id of the first record whose chain does not hold, or None when the log is intact.

    A record breaks the chain when it does not link to the one before, when its hash does not
    match its fields, or when its time is earlier than the record before (backdated).
    """
    expected_prev = GENESIS_HASH
    last_at: datetime | None = None
    for record in records:
        if (
            record.prev_hash != expected_prev
            or record.row_hash != record_hash(record)
            or (last_at is not None and record.at < last_at)
        ):
            return record.record_id
        expected_prev = record.row_hash
        last_at = record.at
    return None
