"""Hash-chained audit records.

Each row's hash covers its fields and the previous row's hash, so changing, deleting or
reordering any row breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS_HASH = b"\x00" * 32

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


@dataclass(frozen=True)
class AuditRecord:
    """An event as stored: with its id, time and chain hashes."""

    record_id: int
    at: datetime
    event: AuditEvent
    prev_hash: bytes
    row_hash: bytes


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


def first_broken_record(records: Iterable[AuditRecord]) -> int | None:
    """The id of the first record whose chain does not hold, or None when the log is intact."""
    expected_prev = GENESIS_HASH
    for record in records:
        if record.prev_hash != expected_prev or record.row_hash != chain_hash(
            record.prev_hash, record.at, record.event
        ):
            return record.record_id
        expected_prev = record.row_hash
    return None
