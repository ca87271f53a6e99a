"""Notes of the audit rows a replica appended and has not anchored yet, exported before its round reads anything.

Retest 17, finding A (HIGH): the database owner can make a replica's process die when he chooses
- a message of hundreds of MB raised on one of the upkeep's statements (libpq reads it whole), an
OOM kill past the memory limit - between a reveal's append and the export of the checkpoint that
anchors its row. The rows it remembered then die with it, unnamed, and the owner rewrites them
(re-hashed by the database's own function) with audit-verify intact.

So at the start of each round, before its first statement, the upkeep exports - to the same
places as the checkpoints: a JSON log line, the checkpoint file - a note of the rows appended
since its last note: their ids as runs (`[first id, length, gap to the next run's first id,
length, ...]`: a few bytes a row even when replicas' ids interleave), how many, and a digest over
each (id, row_hash) the append returned (and checked against the event). `audit verify --exported` then requires every
noted row to be in the log with the hash noted (`check_notes`): a row deleted or rewritten after
its note is reported TAMPERED, whether or not any checkpoint was exported since.

Notes are not signed (a Transit call per round): a note added to the copy by someone who can
write it only makes verification fail (closed), and the copy is kept where the database owner
cannot write (docs/production.md).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from vault_service.domain.audit import AuditRecord
from vault_service.domain.checkpoints import Finding

MAX_NOTED_ROWS = 1_000_000
"""Rows one note may name (a replica remembers at most 200,000): a larger note is refused as unreadable, not walked."""
_DIGEST_CONTEXT = b"tokenvault audit pending rows v1\n"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def pending_digest(rows: Iterable[tuple[int, bytes]]) -> str:
    """The hex SHA-256 over each (id, row_hash) in id order: the id as 8 bytes big-endian, then the 32-byte hash."""
    digest = hashlib.sha256(_DIGEST_CONTEXT)
    for row_id, row_hash in sorted(rows):
        digest.update(row_id.to_bytes(8, "big", signed=True) + bytes(row_hash))
    return digest.hexdigest()


def _ranges(ids: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted `ids` as inclusive ranges of consecutive ids."""
    found: list[tuple[int, int]] = []
    for row_id in sorted(ids):
        if found and row_id == found[-1][1] + 1:
            found[-1] = (found[-1][0], row_id)
        else:
            found.append((row_id, row_id))
    return tuple(found)


@dataclass(frozen=True)
class PendingNote:
    """Rows a replica appended and had not anchored when it noted them: id ranges, count, digest over (id, row_hash)."""

    ranges: tuple[tuple[int, int], ...]
    rows: int
    digest: str

    @classmethod
    def of(cls, rows: Mapping[int, bytes]) -> PendingNote:
        """The note of `rows` (id -> row_hash as the append returned it)."""
        return cls(_ranges(rows), len(rows), pending_digest(rows.items()))

    def ids(self) -> Iterator[int]:
        """The ids noted, in order."""
        for first, last in self.ranges:
            yield from range(first, last + 1)

    def described(self) -> str:
        """The ids for a report: '16 to 18, 21' (the first 10 ranges, then how many more)."""
        shown = ", ".join(str(a) if a == b else f"{a} to {b}" for a, b in self.ranges[:10])
        return shown + (f" and {len(self.ranges) - 10} more range(s)" if len(self.ranges) > 10 else "")

    def exported(self) -> dict[str, object]:
        """The note as exported (JSON): `runs` is [first, length, gap, length, ...], the gap from a run's last id."""
        runs: list[int] = []
        last = 0
        for first, end in self.ranges:
            runs += [first - last if runs else first, end - first + 1]
            last = end
        return {"runs": runs, "rows": self.rows, "digest": self.digest}

    @classmethod
    def from_exported(cls, fields: object) -> PendingNote:
        """The note `exported` wrote; ValueError (or TypeError, KeyError) for anything else."""
        if not isinstance(fields, dict):
            raise TypeError("a pending-rows note is a JSON object")
        runs, rows, digest = fields["runs"], fields["rows"], fields["digest"]
        if not isinstance(runs, list) or len(runs) % 2 or not all(type(n) is int for n in runs):
            raise ValueError("a pending-rows note's runs are pairs of integers")
        if any(n < 1 for n in runs[1:]):
            raise ValueError("a pending-rows note's gaps and lengths are positive")
        ranges: list[tuple[int, int]] = []
        for at in range(0, len(runs), 2):
            first = runs[at] + (ranges[-1][1] if ranges else 0)
            ranges.append((first, first + runs[at + 1] - 1))
        if type(rows) is not int or not isinstance(digest, str) or not _HEX_DIGEST.fullmatch(digest):
            raise ValueError("a pending-rows note has an integer `rows` and a SHA-256 `digest`")
        if rows != sum(b - a + 1 for a, b in ranges) or not 0 < rows <= MAX_NOTED_ROWS:
            raise ValueError("a pending-rows note counts the ids of its runs, at most MAX_NOTED_ROWS")
        return cls(tuple(ranges), rows, digest)


class NotedRows:
    """The hashes of the rows the notes name, kept as the log's records come (a log of any length, streamed).

    Only the noted ids' hashes are kept: a few seconds' rows per note, however long the log.
    """

    def __init__(self, notes: Iterable[PendingNote]) -> None:
        self._notes = sorted(notes, key=lambda n: n.ranges[0])
        merged: list[tuple[int, int]] = []
        for first, last in sorted(r for note in self._notes for r in note.ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        self._firsts = [first for first, _ in merged]
        self._lasts = [last for _, last in merged]
        self.hashes: dict[int, bytes] = {}
        """Each noted id read so far, with its row hash."""

    def add(self, record: AuditRecord) -> None:
        """The next record of the log: its hash kept when a note names it."""
        at = bisect.bisect_right(self._firsts, record.record_id) - 1
        if at >= 0 and record.record_id <= self._lasts[at]:
            self.hashes[record.record_id] = record.row_hash

    def finding(self) -> Finding | None:
        """The first note whose rows were not all added with the hashes noted (None: every note holds)."""
        hashes = self.hashes
        for note in self._notes:
            ids = list(note.ids())
            absent = [i for i in ids if i not in hashes]
            if absent:
                what = f"row(s) {PendingNote.of(dict.fromkeys(absent, b'')).described()} are not in the log"
            elif pending_digest((i, hashes[i]) for i in ids) != note.digest:
                what = "they do not hold the row hashes noted: rewritten since"
            else:
                continue
            return Finding(
                (absent or ids)[0],
                f"the audit rows {note.described()}, which a replica noted in the exported copy as appended and not"
                f" yet anchored, do not stand as appended: {what}",
            )
        return None


def check_notes(records: Iterable[AuditRecord], notes: Iterable[PendingNote]) -> Finding | None:
    """The first note whose rows are not all in `records` with the hashes noted (None: every note holds)."""
    noted = NotedRows(notes)
    for record in records:
        noted.add(record)
    return noted.finding()
