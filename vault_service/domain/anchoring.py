"""Anchoring each audit row the service appended, not only the chain's head.

A signed checkpoint vouches for the chain up to its head: for whatever rows the database shows
the checkpoint round. A row the database never put in the chain - the insert diverted by a view
or a rule, and shown only to the append's own checks - is anchored nowhere, and audit-verify
reports the log intact without it (insider round 15, finding 1). So the service remembers the
(id, row_hash) of every row it appended, each hash first checked against the event it wrote,
and every checkpoint round checks that the chain segment up to the head it is about to sign
holds each of them. One it does not is reported (ids only) and named in the signed, exported
checkpoint, so audit-verify with the exported copy reports it.

Why showing the missing row to the segment read too does not help the database owner: each
row's hash covers its fields and the hash before it, so the segment, checked backwards from
the head that is then signed, is the one chain that head descends from. A row shown in it is
a row of the signed chain, with the fields the service wrote; audit-verify must then find it in
the log, or the chain breaks at the checkpoint. See docs/threat-model.md.
"""

from __future__ import annotations

import bisect
import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vault_service.domain.audit import (
    CHAIN_HASH_BYTES,
    AuditEvent,
    AuditRecord,
    HashVersions,
    chain_hash_v2,
    record_hash,
)
from vault_service.domain.checkpoints import ChainHead
from vault_service.domain.errors import AuditUnavailable

log = logging.getLogger(__name__)

Link = tuple[bytes, bytes]
"""A row's (prev_hash, row_hash)."""

DEFAULT_REMEMBERED_ROWS = 200_000
"""Rows remembered until a checkpoint round checks them (~25 MB at most; a round drains them every few seconds);
at the bound appends are refused."""


HASHED_PER_PAUSE = 64
"""Rows of other replicas hashed between two pauses of a round (~1 ms of the interpreter at ~16 µs a row)."""

SEGMENT_PAGE_ROWS = 256
"""Rows per page of the upkeep's segment read (keyset on id): each read's parse is a short hold of the interpreter."""
SEGMENT_PAGE_BYTES = 1024 * 1024
"""Bytes of row fields one page fetches at most, besides its first row (at most MAX_ROW_BYTES): a page is cut before
the row that would pass it, and the next page starts there (review 17 #1: the reads are bounded in memory)."""


def stored_as_written(record: AuditRecord, event: AuditEvent) -> bool:
    """Whether `record` (the row an append returned) is `event` as written, chained by the database (hash v2)."""
    return record.hash_version == 2 and record.row_hash == chain_hash_v2(
        record.prev_hash, record.record_id, record.at, event
    )


class WaitingFor(enum.Enum):
    """What the oldest row this process appended still waits for, as the upkeep's rounds left it (review 18, R18-11).

    A row is forgotten only once a checkpoint of a head it was checked against is exported
    (attack 17, finding 2), so a row can wait with its check done: the export keeps failing (the
    checkpoint file's volume full or read-only, the checkpoint INSERT held).
    """

    CHECK = "the audit upkeep's check"
    """No round has checked it against the chain yet (the rounds fail before, or have not run)."""
    EXPORT = "the audit upkeep's export of a checkpoint anchoring them (they were checked against the chain)"
    """A round checked it against the chain, but no checkpoint of that head could be exported yet."""


class AuditChecksOverdue(AuditUnavailable):
    """The audit rows this process appended have gone unchecked too long, or too many of them: appends are refused.

    A round that never succeeds leaves the rows it should check in memory, unanchored (review
    16, finding 1: the database owner can make one replica's segment read fail); the vault fails
    closed rather than serve calls whose rows nothing checks.

    `reason` says why, on its own (what is logged); the message adds what the caller can do.
    `database_unreachable`: the upkeep's latest round failed because no connection to the vault's
    database could be had (an outage: review 17 #4), so the message says that and does not send
    the caller to the security team. `waiting_for`: whether the rows still wait for their check,
    or were checked and wait for their checkpoint's export (review 18, R18-11).
    """

    def __init__(
        self, reason: str, database_unreachable: bool = False, waiting_for: WaitingFor = WaitingFor.CHECK
    ) -> None:
        if database_unreachable:
            advice = (
                "The audit upkeep cannot reach the vault's database (no connection could be had): this clears by"
                " itself once the database is back (alert AuditDatabaseUnreachable)"
            )
        elif waiting_for is WaitingFor.EXPORT:
            advice = (
                "The audit upkeep checked them against the chain but cannot export a checkpoint anchoring them: the"
                " vault's log says why (\"audit upkeep round failed\"; the checkpoint file's volume full or read-only,"
                " or the checkpoint table held); this clears once a checkpoint is exported (alert AuditUpkeepFailing)"
            )
        else:
            advice = (
                "If the database or Vault is away, this clears by itself once the upkeep can read the database"
                " again; if it persists, tell the security team (alert AuditUpkeepFailing: the vault's log says"
                " why its audit upkeep rounds fail)"
            )
        super().__init__(f"{reason}, so the call was refused until the upkeep checks and anchors them. {advice}")
        self.reason = reason
        self.database_unreachable = database_unreachable
        self.waiting_for = waiting_for


class AppendedRows:
    """The id and (prev_hash, row_hash) of the rows this process appended that no checkpoint round has checked yet.

    Fails closed: `check_open` refuses (AuditChecksOverdue) once the oldest remembered row is
    older than `max_age` seconds (None: no age bound, for processes with no upkeep) or `limit`
    rows are remembered; the appends then refused are counted through `on_refused`. A row
    already written is always remembered. Thread-safe: appends add, the upkeep thread takes.

    Evidence before a kill (review 17, finding 1): once the oldest row is older than `warn_age`
    seconds, `check_open` logs a WARNING once per stretch naming the unchecked ids (count,
    lowest, highest; ids only), so a process killed later (OOM, SIGKILL) still leaves them in
    the log outside the database. `oldest_age` gives the age for a gauge.
    """

    def __init__(
        self,
        limit: int = DEFAULT_REMEMBERED_ROWS,
        max_age: float | None = None,
        on_refused: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        warn_age: float | None = None,
    ) -> None:
        self._limit = limit
        self.max_age = max_age
        self.warn_age = warn_age
        self._warned = False  # the early warning is logged once per stretch of old rows
        self._rows: OrderedDict[int, tuple[Link, float]] = OrderedDict()  # in the order remembered: oldest first
        self._lock = threading.Lock()
        self.on_refused = on_refused or (lambda count: None)
        self._clock = clock
        self.database_unreachable = False
        """Whether the upkeep's latest round failed for want of any database connection (set by the upkeep)."""
        self.waiting_for = WaitingFor.CHECK
        """What the oldest remembered row waits for (set by the upkeep: `checked`, and back at `forget`)."""

    def check_open(self) -> None:
        """Raise AuditChecksOverdue (counted) if the remembered rows are too old or too many to append more."""
        with self._lock:
            count, waiting_for = len(self._rows), self.waiting_for
            age = self._clock() - next(iter(self._rows.values()))[1] if count else 0.0
            ids = (min(self._rows), max(self._rows)) if self._should_warn(age) else None
        if ids is not None:
            log.warning(
                "%d audit row(s) this service appended (ids %d to %d) have waited %.0f s for %s; if this replica"
                " dies now they are forgotten unanchored. Check that these ids are in vault.audit_log (logged once"
                " per stretch)",
                count,
                ids[0],
                ids[1],
                age,
                waiting_for.value,
            )
        if count >= self._limit:
            reason = f"{count} of this replica's audit rows are waiting for {waiting_for.value} (the bound)"
        elif self.max_age is not None and age > self.max_age and waiting_for is WaitingFor.EXPORT:
            reason = (
                f"the audit upkeep checked this replica's audit rows against the chain but has not anchored them in"
                f" an exported checkpoint for {age:.0f} s (the bound is {self.max_age:.0f} s)"
            )
        elif self.max_age is not None and age > self.max_age:
            reason = (
                f"the audit upkeep has not checked this replica's audit rows for {age:.0f} s"
                f" (the bound is {self.max_age:.0f} s)"
            )
        else:
            return
        self.on_refused(1)
        unreachable = self.database_unreachable
        if unreachable:
            reason += " while the vault's database cannot be reached"
        raise AuditChecksOverdue(reason, unreachable, waiting_for)

    def _should_warn(self, age: float) -> bool:
        """Whether to log the early warning now (under the lock): the first call of a stretch past `warn_age`."""
        if self.warn_age is None or age <= self.warn_age:
            self._warned = False
            return False
        if self._warned:
            return False
        self._warned = True
        return True

    def oldest_age(self) -> float:
        """Seconds the oldest remembered row has waited for its check and its checkpoint's export (0 when none)."""
        with self._lock:
            return self._clock() - next(iter(self._rows.values()))[1] if self._rows else 0.0

    def remember(self, rows: Iterable[tuple[int, Link]]) -> None:
        """Remember appended rows until a checkpoint round checks them."""
        with self._lock:
            now = self._clock()
            for row_id, link in rows:
                self._rows[row_id] = (link, now)

    def remembered(self) -> dict[int, Link]:
        """A copy of the remembered rows (still remembered until `forget`)."""
        with self._lock:
            return {row_id: link for row_id, (link, _) in self._rows.items()}

    def checking(self) -> None:
        """A round is about to check the rows: until it says otherwise they wait for their check.

        A round that fails at the check after an earlier one failed at the export must not leave
        the refusals saying the rows were checked (review 19, R19-8).
        """
        with self._lock:
            self.waiting_for = WaitingFor.CHECK

    def checked(self, ids: Container[int]) -> None:
        """A round checked these rows against the chain: if the oldest is among them, it waits for the export now."""
        with self._lock:
            if self._rows and next(iter(self._rows)) in ids:
                self.waiting_for = WaitingFor.EXPORT

    def forget(self, ids: Iterable[int]) -> None:
        """Forget rows a round has checked and exported; the rows left wait for their check."""
        with self._lock:
            for row_id in ids:
                self._rows.pop(row_id, None)
            self.waiting_for = WaitingFor.CHECK

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


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
