"""What one audit upkeep round does: the aggregated rows written, this process's rows checked, the head anchored.

`AuditUpkeep` (audit_upkeep.py) runs an `UpkeepRound` every interval, under its watchdog, and
retries it when it fails; signing, storing and exporting the head is `CheckpointAnchor`'s
(checkpoint_anchor.py).

Each round checks, before anything is signed, that the chain up to the head holds every
row this process appended (domain/anchoring.py): the segment from its oldest such row to the
head, read once (links and hashes; the full rows only of those it did not append), must hash
and link up to the head, and hold each of them with the link and hash the append returned. A
row it does not hold was diverted out of the chain (insider round 15, finding 1): the upkeep
logs an error (ids only), counts the rows, and names them in the next checkpoint it exports,
under a signature of their own (a note of the head alone when another replica's checkpoint
covers it), so audit-verify with the exported copy reports them.

The rows checked are forgotten only once this process has exported a checkpoint of the very head
they were checked against (the one the round signed, or another replica's genuine checkpoint of
it, exported again): a row the chain merely holds is not anchored yet, and the database owner
who keeps the round from exporting (a lock on vault.audit_checkpoints holding the INSERT) could
rewrite it unseen (attack 17, finding 2). Until then it stays remembered, so the next round
checks it again, and the fail-closed bound, the early warning, the gauge and `stop()` name it.
What is exported is always the head this round read and checked, never read again.

Before its first statement, each round exports a note of the rows appended since the last note
(id ranges, count, a digest over each id and row hash; domain/pending_rows.py) to where the
checkpoints go, so a process the database owner kills during the round (a huge message on one
of its statements taking it past its memory limit: retest 17, finding A) has named them outside
the database, and `audit verify --exported` requires them in the log as appended. One line per
round at most, none when nothing new was appended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from vault_service.domain.anchoring import AppendedRows, AuditChecksOverdue, Link
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.pending_rows import PendingNote
from vault_service.domain.segment_check import SEGMENT_PAGE_ROWS, SegmentCheck
from vault_service.service.checkpoint_anchor import CheckpointAnchor
from vault_service.service.checkpoint_ports import CheckpointStore
from vault_service.service.erase_commitments import EraseCommitments
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog

log = logging.getLogger(__name__)

_PAGE_ROWS = SEGMENT_PAGE_ROWS
"""Rows per page of a round's segment read (the serving threads run during each read)."""


def yield_interpreter() -> None:
    """Let the threads serving calls take the interpreter (the GIL) before a round goes on hashing."""
    time.sleep(0)


def _broken(row_id: int | None) -> str:
    """Where the segment stopped holding, for the log: every appended row in it is then reported."""
    if row_id is None:
        return ""
    return (
        f". The chain segment breaks at row {row_id} (a row not linked to the one before, not hashing to its"
        " fields, or larger than any audit row the vault writes, so not read): it vouches for none of them"
    )


class UpkeepRound:
    """One audit upkeep round: flush the aggregated rows, check the rows this process appended, anchor the head."""

    def __init__(
        self,
        audit: AuditLog,
        store: CheckpointStore,
        meter: TokenizeMeter,
        refusals: RefusalAuditor,
        anchor: CheckpointAnchor,
        appended: AppendedRows | None,
        on_rows_missing: Callable[[int], None],
        note_pending: Callable[[PendingNote], None] | None,
        progress: Callable[[], None],
        commitments: EraseCommitments | None = None,
    ) -> None:
        """The arguments are AuditUpkeep's (see there); `progress` is told of each page of the segment read.

        `commitments`: the erase-row commitment of each head signed (A46-3; None: v1 checkpoints, committing to none).
        """
        self._audit = audit
        self._store = store
        self._meter = meter
        self._refusals = refusals
        self._anchor = anchor
        self._counted: ChainHead | None = None  # the last head counted: the next count starts there
        self._appended = appended
        self._on_rows_missing = on_rows_missing
        self._note_pending = note_pending
        self._noted: set[int] = set()  # remembered rows already named in an exported note
        self._note_failing = False  # the last note could not be written (logged once while it fails)
        self._progress = progress
        self._commitments = commitments

    def run(self) -> Checkpoint | None:
        """Write the aggregated rows, then checkpoint the chain if it grew; the checkpoint made."""
        self._note_appended()  # before any statement: the database owner may kill the process during one
        try:
            self._meter.flush_into(self._audit.append)
            self._refusals.flush_into(self._audit.append)
        except AuditChecksOverdue:  # the counts stay; this round's check reopens the appends for the next flush
            pass
        # The newest checkpoint is read before the head: a checkpoint is stored only after its
        # rows are committed, so a true one never names a row beyond a head read after it.
        newest = self._store.newest_checkpoint()
        self._anchor.check_sequence()
        # Taken before the head is read: every row remembered by then is committed, so within the head.
        appended = self._appended.remembered() if self._appended is not None else {}
        head = self._store.head(self._counted)
        self._counted = head or self._counted
        if appended and self._appended is not None:
            self._appended.checking()
        self._check_appended(head, appended)
        if appended and head is not None and self._appended is not None:
            self._appended.checked(appended)  # what the refusals say until the export (R18-11)
        if head is not None and self._commitments is not None:
            # signed with its erase rows' commitment once walked (A46-3); never over rows found changed (R47-2)
            head = self._commitments.commit(head, self._anchor.missing)
        checkpoint = self._anchor.anchor(newest, head)
        if head is None:
            return checkpoint
        if self._anchor.missing or (appended and not self._anchor.exported_as(head)):
            checkpoint = self._anchor.export_checked_head(newest, head)
        if appended and self._appended is not None and self._anchor.exported_as(head):
            # Forgotten only now: until a checkpoint of the head they were checked against is
            # exported, the database owner can still rewrite them unseen (attack 17, finding 2).
            self._appended.forget(appended)
        return checkpoint

    def _note_appended(self) -> None:
        """Export a note of the remembered rows no note named yet (retest 17, finding A); nothing when none.

        A note the checkpoint file refuses (OSError; its log line is out already) is logged and tried
        again next round, and the round goes on: its checkpoint's export then fails on the same file,
        and the refusals say the rows were checked but not anchored (R18-11).
        """
        if self._appended is None or self._note_pending is None:
            return
        remembered = self._appended.remembered()
        self._noted.intersection_update(remembered)  # forgotten rows need no memory of their note
        new = {row_id: link[1] for row_id, link in remembered.items() if row_id not in self._noted}
        if not new:
            return
        try:
            self._note_pending(PendingNote.of(new))
        except OSError as error:  # the file's error names its path only
            if not self._note_failing:
                log.error("audit rows pending could not be noted in the checkpoint file (%s); retried", error)
            self._note_failing = True
            return
        self._note_failing = False
        self._noted.update(new)

    def _check_appended(self, head: ChainHead | None, appended: dict[int, Link]) -> None:
        """Check that the chain up to `head` holds every row of `appended` (see the module's doc).

        The rows stay remembered (`run_once` forgets them once that head is exported); rows found
        missing again before the checkpoint naming them was exported are counted and logged once.
        """
        if self._appended is None or not appended:
            return
        # Always from the oldest remembered row, never from where a round cut off got to: a mark
        # saved then vouches for nothing the owner changed below it since (review 19, R19-1).
        check = self._read_segment(head, SegmentCheck(head, appended, yield_interpreter), min(appended) - 1)
        missing = tuple(i for i in check.missing() if i not in self._anchor.missing)
        if not missing:
            return
        self._on_rows_missing(len(missing))
        self._anchor.missing = tuple(sorted({*self._anchor.missing, *missing}))
        more = f" and {len(missing) - 50} more" if len(missing) > 50 else ""
        shown = ", ".join(str(i) for i in missing[:50]) + more
        log.error(
            "%d audit row(s) this service appended are not in the chain up to row %s (ids %s): the database wrote"
            " them elsewhere than vault.audit_log (a view, rule or trigger diverting them) or changed them, and"
            " the calls were audited nowhere. They are named in the next exported checkpoint; report it to the"
            " security team and run audit-verify against the exported checkpoints%s",
            len(missing),
            head.head_id if head else "(none)",
            shown,
            _broken(check.broken_at),
        )

    def _read_segment(self, head: ChainHead | None, check: SegmentCheck, after: int) -> SegmentCheck:
        """Read the segment after `after` up to `head` into `check`, page by page; `check`.

        Each page re-arms the watchdog: a held statement is bounded, not the segment's length (R18-4).
        """
        while head is not None and after < head.head_id:  # page by page: bounded in memory (review 17 #1)
            page = self._store.segment(after, head, check.appended_after(after, _PAGE_ROWS), _PAGE_ROWS)
            if not page or not check.add(page):
                break
            after = page[-1].record_id
            self._progress()  # a page read: the watchdog bounds a held statement, not the segment
        return check
