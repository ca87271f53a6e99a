"""The upkeep's check that the chain segment up to a head holds every row this replica appended.

Split from anchoring.py (which remembers the appended rows): the segment is read page by page
(SEGMENT_PAGE_ROWS rows, SEGMENT_PAGE_BYTES of fields) and checked here in the memory of one page.
See anchoring.py's docstring for why a segment checked backwards from the head it is about to sign
vouches for the rows it holds.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from vault_service.domain.anchoring import Link
from vault_service.domain.audit import CHAIN_HASH_BYTES, AuditRecord, HashVersions, record_hash
from vault_service.domain.checkpoints import ChainHead

HASHED_PER_PAUSE = 64
"""Rows of other replicas hashed between two pauses of a round (~1 ms of the interpreter at ~16 µs a row)."""

SEGMENT_PAGE_ROWS = 256
"""Rows per page of the upkeep's segment read (keyset on id): each read's parse is a short hold of the interpreter."""
SEGMENT_PAGE_BYTES = 1024 * 1024
"""Bytes of row fields one page fetches at most, besides its first row (at most MAX_ROW_BYTES): a page is cut before
the row that would pass it, and the next page starts there (review 17 #1: the reads are bounded in memory)."""


@dataclass(frozen=True)
class SegmentRow:
    """A row of the chain segment as one page of the upkeep's segment read gives it.

    `prev_hash`/`row_hash` are b"" when the database holds something other than a 32-byte hash
    there (not fetched: no chain trigger wrote it). `record` holds the row's fields when they were
    fetched to be hashed (rows this process did not append, or shown with another link); None for
    an appended row shown with the link the append returned, and for a row whose fields exceed
    what a genuine audit row can hold (`oversize`: not fetched, so the row cannot be hashed).
    """

    record_id: int
    prev_hash: bytes
    row_hash: bytes
    record: AuditRecord | None = None
    oversize: bool = False


class SegmentCheck:
    """Checks, page by page in id order, that the chain segment ending at `head` holds every appended row.

    `appended` was taken before `head` was read: each of those rows was committed by then and
    numbered by the id sequence, so a head read afterwards is at or beyond it; one beyond the
    head is missing. The segment vouches for a row only if it holds together: each row links to
    the row before, its hash is that of its fields (an appended row shown with the link and hash
    the append returned needs none: the append checked that hash against the event written,
    chained after that very link), and the last row is `head` itself. Otherwise it vouches for
    none of them, and `broken_at` names the first row that does not hold.

    Only what the next page needs is kept (the last hash, the appended rows seen held), so a
    segment of any length is checked in the memory of one page (review 17 #1). A check cut off
    part way is not resumed: the next round checks the segment from its oldest appended row again
    (review 19, R19-1: a row of this replica's deleted or rewritten below a saved mark, the chain
    re-linked only up to the mark, went unseen by a round resumed from it).

    `pause` is called after every `HASHED_PER_PAUSE` rows hashed here: the upkeep yields the
    interpreter there, so the calls being served do not wait behind one long burst of hashing.
    """

    def __init__(
        self, head: ChainHead | None, appended: Mapping[int, Link], pause: Callable[[], None] | None = None
    ) -> None:
        self._head = head
        self._appended = appended
        self._pause = pause
        self._previous: bytes | None = None
        self._last: tuple[int, bytes] | None = None
        self._held: set[int] = set()
        self._hashed = 0
        self._ids = sorted(appended)
        # The segment starts at the oldest appended row, version 2 (`stored_as_written`): every row
        # in it comes after a version-2 row, so none may be version 1 (attack 17, finding 1).
        self._versions = HashVersions(after_version_2=True)
        self.broken_at: int | None = None
        """The id of the first row at which the segment does not hold (None: none so far)."""

    def appended_after(self, after_id: int, count: int) -> list[tuple[int, bytes]]:
        """The (id, row_hash) of the first `count` appended rows after `after_id`: those a page need not fetch."""
        start = bisect.bisect_right(self._ids, after_id)
        return [(i, self._appended[i][1]) for i in self._ids[start : start + count]]

    def add(self, rows: Sequence[SegmentRow]) -> bool:
        """Check the next page of the segment; False once it does not hold (reading on cannot change the finding)."""
        for row in rows:
            if self.broken_at is not None:
                return False
            own = self._appended.get(row.record_id) == (row.prev_hash, row.row_hash)
            if not own and self._pause is not None:
                self._hashed += 1
                if self._hashed % HASHED_PER_PAUSE == 0:
                    self._pause()
            linked = self._previous is None or row.prev_hash == self._previous
            if not (own or _hashes(row, self._versions)) or not linked:
                self.broken_at = row.record_id
                return False
            self._previous = row.row_hash
            self._last = (row.record_id, row.row_hash)
            if own:
                self._held.add(row.record_id)
        return self.broken_at is None

    @property
    def complete(self) -> bool:
        """Whether the segment read so far holds together and ends at the head."""
        head = self._head
        return head is not None and self.broken_at is None and self._last == (head.head_id, head.head_hash)

    def missing(self) -> tuple[int, ...]:
        """The ids of the appended rows the segment read so far does not hold with their link and hash."""
        if not self._appended:
            return ()
        if not self.complete:
            return tuple(sorted(self._appended))
        return tuple(sorted(i for i in self._appended if i not in self._held))


def _hashes(row: SegmentRow, versions: HashVersions) -> bool:
    """Whether `row`'s fields were read and hash to its row hash, with the link it is shown with.

    And whether its hash version may stand there (`versions`, shared with audit-verify).
    """
    record = row.record
    return (
        record is not None
        and not row.oversize
        and versions.problem(record) is None
        and len(row.row_hash) == CHAIN_HASH_BYTES
        and (record.prev_hash, record.row_hash) == (row.prev_hash, row.row_hash)
        and record_hash(record) == row.row_hash
    )
