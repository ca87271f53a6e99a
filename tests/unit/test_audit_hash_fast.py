"""The row hash's faster spelling (review 40, R40-3) hashes exactly what the field-by-field one did.

`chain_hash_v2` is what the erased-token set's start-up read, the audit upkeep and `audit verify` recompute for every
row; it was made cheaper (`isoformat` for the time, one join of the fields). The reference below is the code before.
"""

from __future__ import annotations

import hashlib
import random
import struct
from datetime import UTC, datetime, timedelta, timezone

from vault_service.domain.audit import (
    UNREADABLE_TIME,
    AuditEvent,
    _array_send,
    _utc_microseconds,
    chain_hash_v2,
)


def _reference_time(at: datetime) -> str:
    u = at.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}"


def _reference_hash(prev: bytes, record_id: int, at: datetime, event: AuditEvent, sent: bytes | None) -> bytes:
    fields = (
        str(record_id),
        _reference_time(at),
        event.client,
        event.client_serial,
        event.client_cert_sha256,
        event.action,
        event.purpose,
        event.token_types,
        str(event.item_count),
        event.outcome,
    )
    if None in fields:
        return b""
    data = _array_send(event.revealed) if sent is None else sent
    encoded = b"".join(struct.pack(">i", len(f.encode())) + f.encode() for f in fields)
    return hashlib.sha256(prev + encoded + hashlib.sha256(data).digest()).digest()


def test_the_time_is_spelled_as_before_for_any_year_zone_and_microsecond() -> None:
    rng = random.Random(4003)
    times = [UNREADABLE_TIME, datetime(1, 1, 1, 12, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    times += [datetime(5, 3, 4, 0, 0, 0, 0, tzinfo=UTC), datetime(999, 1, 1, 0, 0, 0, 7, tzinfo=UTC)]
    for _ in range(20000):
        zone = timezone(timedelta(minutes=rng.randrange(-23 * 60, 23 * 60)))
        moment = datetime(rng.randrange(2, 9999), 1, 1, tzinfo=UTC) + timedelta(
            days=rng.randrange(360), microseconds=rng.randrange(86_400 * 10**6)
        )
        times.append(moment.astimezone(zone))
    for at in times:
        assert _utc_microseconds(at) == _reference_time(at), at


def test_the_row_hash_is_the_same_for_rows_with_and_without_tokens() -> None:
    rng = random.Random(4004)
    for i in range(3000):
        hashes = tuple(rng.randbytes(16) for _ in range(rng.choice((0, 0, 1, 3))))
        event = AuditEvent(
            client=rng.choice(("analyst", "privacy-officer", "é-client", "")),
            action=rng.choice(("erase", "detokenize")),
            outcome=rng.choice(("refused: PermissionDenied", "ok: 1 erased, 0 not erased", "")),
            item_count=rng.randrange(0, 1000),
            purpose="GDPR-" + str(i),
            token_types="ip",
            client_serial=str(rng.randrange(10**6)),
            client_cert_sha256=rng.randbytes(32).hex(),
            revealed=hashes,
        )
        prev = rng.randbytes(rng.choice((0, 32)))
        at = datetime(2026, 12, 6, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**12))
        sent = rng.choice((None, _array_send(hashes), b"", rng.randbytes(40)))
        assert chain_hash_v2(prev, i, at, event, sent) == _reference_hash(prev, i, at, event, sent)
