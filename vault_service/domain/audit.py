"""Hash-chained audit records.

Each row's hash covers its fields and the previous row's hash, so changing, deleting or
reordering any row breaks every hash after it. Since migration 0006 the database computes the
chain itself (hash version 2, `vault.audit_row_hash`); rows written before keep version 1,
computed by the service. Both are verified here, under the rules of `HashVersions`: version 1
hashes fewer fields, so a row may be version 1 only where the log's history allows it.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS_HASH = b"\x00" * 32
REVEAL_HASH_BYTES = 16
"""Length of the keyed hash kept per revealed or erased token (keyed BLAKE2b, see `revealing.reveal_hasher`)."""
CHAIN_HASH_BYTES = 32
"""Length of a row's prev_hash and row_hash (SHA-256): any other length was not written by the chain trigger."""
MAX_ITEMS_PER_CALL = 10_000
"""Items one call may carry (checked at the gRPC edge, entrypoints/guard.py): an audit row names no more tokens."""
MAX_ROW_TEXT_BYTES = 64 * 1024
"""What a row's text columns (client, serial, certificate digest, action, purpose, token types, outcome) hold at most
together: the service writes names, a purpose of at most 64 characters and short outcomes (well under 1 kB)."""
MAX_ROW_BYTES = 20 + MAX_ITEMS_PER_CALL * (4 + REVEAL_HASH_BYTES) + MAX_ROW_TEXT_BYTES
"""The most a genuine audit row's variable columns take as read (`revealed` in its binary form: a 20-byte header and
4 + 16 bytes per token, plus the text): a row beyond it was written by no vault, and the upkeep does not fetch it."""

MAX_REPORTED_ROW_BYTES = MAX_ROW_BYTES + 2 * CHAIN_HASH_BYTES
"""The most a genuine audit row takes as a report reads it: its variable columns and its two chain hashes."""


FETCH_SAW = "; fetch saw records up to "
"""What a Detokenize record's outcome ends with since attack 43's A43-1 fix: the audit log's newest id its fetch saw."""
_FETCH_SAW = re.compile(re.escape(FETCH_SAW) + r"(0|[1-9][0-9]{0,18})\Z")


def with_fetch_head(outcome: str, head: int | None) -> str:
    """`outcome` with the audit log's newest id the call's fetch saw (unchanged when not known)."""
    return outcome if head is None else f"{outcome}{FETCH_SAW}{head}"


def fetch_head(outcome: str) -> int | None:
    """The audit log's newest id a Detokenize record's fetch saw (`with_fetch_head`); None for a record without it."""
    found = _FETCH_SAW.search(outcome)
    return None if found is None else int(found.group(1))


class OversizedRecord(Exception):
    """A row of the log larger than any the vault writes (MAX_REPORTED_ROW_BYTES): its fields are never read.

    Only the database's owner can store one (migration 0040 bounds every column for the serving role):
    a report stops there and names it as tampering, rather than reading it (attack 28, F3: six rows of
    100 MB took the vault past its 1 GiB limit during one report).
    """

    def __init__(self, record_id: int, size: int) -> None:
        super().__init__(
            f"record {record_id} holds {size} bytes, more than any row the vault writes ({MAX_REPORTED_ROW_BYTES}):"
            " it was written outside the vault (the database's owner); its fields were not read, nor any row after it"
        )
        self.record_id = record_id
        self.size = size


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
    """Keyed hashes of the tokens revealed or erased (see `who saw`), or of the token a who-saw question asked
    about (AuditReports), never the tokens themselves."""


@dataclass(frozen=True)
class AuditRecord:
    """An event as stored: with its id, time and chain hashes."""

    record_id: int
    at: datetime
    event: AuditEvent
    prev_hash: bytes
    row_hash: bytes
    hash_version: int = 2
    revealed_sent: bytes | None = None
    """The stored `revealed` column in its binary form (PostgreSQL's `array_send`), when it was read
    from the database and is not NULL; None otherwise, and the hash is taken of `event.revealed`.

    The database hashes this form, which holds more than `event.revealed` can: an empty array
    (`'{}'`, not NULL), NULL elements, more dimensions, lower bounds other than 1. The verifier
    hashes the same bytes, so a genuine row of any shape verifies (review 16).
    """


class UnreadableTime(datetime):
    """A stored time a `datetime` cannot hold (`infinity`, `-infinity`, before the year 1 or after 9999).

    The vault never writes one (the chain trigger stamps each row with the database's clock), so
    a record read with this time is tampered (attack 16, finding 4): `first_broken_record` names
    it. The reader loads such a time as `UNREADABLE_TIME` rather than fail the whole read.
    """


UNREADABLE_TIME = UnreadableTime(1, 1, 1, tzinfo=UTC)
"""The time a record is read with when its stored time is out of a `datetime`'s range."""


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
    return _LENGTH(len(data)) + data


_LENGTH = struct.Struct(">i").pack
"""A field's length as `vault.audit_field` prefixes it (4 bytes, big-endian), packed by a compiled struct."""
_NO_REVEALED_DIGEST = hashlib.sha256(b"").digest()
"""SHA-256 of a NULL `revealed` (hashed as b""): most rows name no token."""


_BYTEA_OID = 17


def _array_send(values: Sequence[bytes]) -> bytes:
    """Postgres' binary form of a one-dimensional bytea[] without NULLs (`array_send`); b"" for none.

    b"" stands for a NULL column (what the service writes for no reveals), hashed as the
    database's `coalesce(array_send(revealed), '')`; an empty array read from the database is
    hashed from its own binary form (`AuditRecord.revealed_sent`), never from here.
    """
    if not values:
        return b""
    header = struct.pack(">iiiii", 1, 0, _BYTEA_OID, len(values), 1)  # ndim, has-nulls, type, length, lower bound
    sizes = set(map(len, values))
    if len(sizes) == 1:  # the reveal hashes: one length, one join (a few times faster for 1000)
        prefix = struct.pack(">i", sizes.pop())
        return header + prefix + prefix.join(values)
    return header + b"".join(struct.pack(">i", len(v)) + v for v in values)


def array_elements(sent: bytes) -> tuple[bytes, ...]:
    """The non-NULL elements of a bytea[] in its binary form (`array_send`), in storage order.

    Any shape: no dimensions (an empty array), several, any lower bounds, NULL elements
    (skipped). Raises ValueError on bytes that are not a bytea[]'s binary form.
    """
    try:
        ndim, _has_nulls, element_type = struct.unpack_from(">iii", sent, 0)
        if element_type != _BYTEA_OID or not 0 <= ndim <= 6:  # MAXDIM
            raise ValueError("not a bytea[] in binary form")
        dims = struct.unpack_from(f">{2 * ndim}i", sent, 12)[0::2]
        count = 1 if ndim else 0
        for length in dims:
            count *= length
        offset, elements = 12 + 8 * ndim, []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", sent, offset)
            offset += 4
            if length >= 0:
                if offset + length > len(sent):
                    raise ValueError("bytea[] element runs past the end")
                elements.append(sent[offset : offset + length])
                offset += length
    except struct.error as error:
        raise ValueError(f"not a bytea[] in binary form: {error}") from None
    if offset != len(sent):
        raise ValueError("bytea[] binary form has trailing bytes")
    return tuple(elements)


def _utc_microseconds(at: datetime) -> str:
    """`at` as the database's `to_char(timezone('UTC', at), 'YYYY-MM-DD"T"HH24:MI:SS.US')`.

    Not strftime: its %Y does not pad years below 1000 to four digits on every platform (glibc writes year 5 as
    "5"), to_char's YYYY does. `isoformat` pads the year to four digits (CPython's C code and its pure-Python
    one alike), and in UTC its first 26 characters are exactly that; one C call (~0.5 us) instead of seven
    formatted fields (~1.5 us), once per row read by the erased-token set's start-up read and by verify (review
    40, R40-3). `tests/unit/test_audit_hash_fast.py` compares it with the field-by-field spelling.
    """
    return at.astimezone(UTC).isoformat(timespec="microseconds")[:26]


def chain_hash_v2(
    prev_hash: bytes, record_id: int, at: datetime, event: AuditEvent, revealed_sent: bytes | None = None
) -> bytes:
    """The database's row hash (migration 0006, `vault.audit_row_hash`), computed here to verify it.

    `revealed_sent`: the stored `revealed` column's binary form when not NULL (see
    `AuditRecord.revealed_sent`); without it the hash covers `event.revealed` (none: NULL).
    """
    fields = (
        str(record_id),
        _utc_microseconds(at),
        event.client,
        event.client_serial,
        event.client_cert_sha256,
        event.action,
        event.purpose,
        event.token_types,
        str(event.item_count),
        event.outcome,
    )
    if None in fields:  # a NULL text column: the database's hash is NULL, never equal to a stored one
        return b""
    sent = _array_send(event.revealed) if revealed_sent is None else revealed_sent
    parts = [prev_hash]
    for text in fields:  # `_field` of each, inlined: no generator or concatenation per field (review 40, R40-3)
        data = text.encode()
        parts += (_LENGTH(len(data)), data)
    parts.append(hashlib.sha256(sent).digest() if sent else _NO_REVEALED_DIGEST)
    return hashlib.sha256(b"".join(parts)).digest()


def record_hash(record: AuditRecord) -> bytes:
    """What `record.row_hash` must be, by the record's hash version (b"" for a version no vault wrote)."""
    if record.hash_version == 1:
        return chain_hash(record.prev_hash, record.at, record.event)
    if record.hash_version == 2:
        return chain_hash_v2(record.prev_hash, record.record_id, record.at, record.event, record.revealed_sent)
    return b""


KNOWN_HASH_VERSIONS = (1, 2)
"""The row hash versions a vault ever wrote: 1 (the service, before migration 0006), 2 (the database since)."""


def _as_before_version_2(record: AuditRecord) -> bool:
    """Whether the fields a version-1 hash does not cover hold what every row written before migration 0006 holds.

    Migration 0006 added `client_serial` and `client_cert_sha256` (default '') and `revealed`
    (NULL) together with version 2; a version-1 row was written before them, so it holds just
    that. Pinned here, those fields cannot be changed under a version-1 hash that ignores them.
    """
    event = record.event
    return (
        event.client_serial == ""
        and event.client_cert_sha256 == ""
        and record.revealed_sent is None
        and (not event.revealed)
    )


class HashVersions:
    """The hash-version rule along the chain, row by row in id order (attack 17, finding 1).

    A version-1 hash covers neither the row's id nor its certificate serial and digest nor
    `revealed` (the keyed hashes of the tokens a reveal showed or an erasure destroyed: what
    who-saw and erase reconciliation read). So a row the database owner has the chain trigger
    write as version 1 could have those rewritten at any time after, under signed and exported
    checkpoints. A row's version therefore stands only if it is a known one, and version 1 only
    (a) before the first version-2 row: versions never go back, since every row written since
    migration 0006 is version 2; and (b) with the fields version 1 does not hash at the values
    every row written before migration 0006 holds ('' and NULL). (b) pins the version-1 rows that
    (a) lets stand, whatever their place: they can be changed in no field but the id, which the
    links (and the checkpoints' row counts) keep in order.

    Shared by audit-verify and who-saw (`first_broken_record`) and the upkeep's segment check
    (domain/anchoring.py), so all three read the same log the same way.
    """

    def __init__(self, after_version_2: bool = False) -> None:
        """`after_version_2`: a version-2 row comes before the first row given (a segment starting at one)."""
        self._after_version_2 = after_version_2

    def problem(self, record: AuditRecord) -> str | None:
        """Why `record`'s hash version cannot stand at this place in the chain (None: it can); then the next row."""
        version = record.hash_version
        if version not in KNOWN_HASH_VERSIONS:
            return f"this row claims hash version {version}, which no vault writes (only 1 and 2): tampered"
        if version == 2:
            self._after_version_2 = True
            return None
        if self._after_version_2:
            return (
                "this row is hash version 1 after version-2 rows: every row since migration 0006 is version 2,"
                " and version 1 does not hash the row's id, certificate or revealed tokens: tampered"
            )
        if not _as_before_version_2(record):
            return (
                "this row is hash version 1 but carries a certificate serial, digest or revealed tokens, which no"
                " row before migration 0006 had and version 1 does not hash: tampered"
            )
        return None


class ChainWalk:
    """The chain's check, one record at a time in id order: what `first_break` does, kept as it goes.

    Holds only the previous row's hash and time and the hash-version rule's state, so a log of
    any length is checked in constant memory (the vault's AuditReports stream it by pages).
    """

    def __init__(self) -> None:
        self._expected_prev = GENESIS_HASH
        self._last_at: datetime | None = None
        self._versions = HashVersions()

    @classmethod
    def resumed(cls, prev_hash: bytes) -> ChainWalk:
        """The check of the rows after a version-2 row of hash `prev_hash` a signed checkpoint vouches for."""
        walk = cls()
        walk._expected_prev = prev_hash
        walk._versions = HashVersions(after_version_2=True)
        return walk

    def problem(self, record: AuditRecord) -> str | None:
        """Why `record` breaks the chain after the records given before (None: it holds); see `first_break`."""
        if isinstance(record.at, UnreadableTime):
            return "this row's time is out of range (infinity, before year 1 or after 9999): tampered"
        version_problem = self._versions.problem(record)
        if version_problem is not None:
            return version_problem
        if (
            record.prev_hash != self._expected_prev
            or record.row_hash != record_hash(record)
            or (self._last_at is not None and record.at < self._last_at)
        ):
            return "the hash chain breaks here (row changed, removed, reordered or backdated)"
        self._expected_prev = record.row_hash
        self._last_at = record.at
        return None


def first_break(records: Iterable[AuditRecord]) -> tuple[int, str] | None:
    """The id of the first record whose chain does not hold and why, or None when the log is intact.

    A record breaks the chain when it does not link to the one before, when its hash does not
    match its fields, when its time is earlier than the record before (backdated), when its
    time could not be read (`UnreadableTime`: out of range, written by no vault), or when its
    hash version cannot stand where it is (`HashVersions`).
    """
    walk = ChainWalk()
    for record in records:
        problem = walk.problem(record)
        if problem is not None:
            return record.record_id, problem
    return None


def first_broken_record(records: Iterable[AuditRecord]) -> int | None:
    """The id of the first record whose chain does not hold (see `first_break`), or None when the log is intact."""
    broken = first_break(records)
    return None if broken is None else broken[0]
