"""The erase-row commitment of each head the audit upkeep signs (attack 46, A46-1/A46-3; domain/erase_commitment.py).

Each round, before its head is signed, `EraseCommitments.commit` walks the chain from the last row it committed to up
to that head: every row's fields read (the upkeep's segment read, fetching all of them), hashed and linked as `audit
verify` does (`ChainWalk`), and each `action = 'erase'` row counted into the running digest. The head is signed with
its commitment (checkpoint message v2) only when the walk reached it and it is the very row the walk ended on; a head
the walk did not reach, or a chain that does not hold on the way, is signed as before (v1, no commitment), and the
walk goes on from its last holding row next round. The appended-rows check (upkeep_round.py) cannot serve here: it
skips the fields of this replica's own rows, so it never sees their `action`. On a database before migration 0070
every head is signed v1 and nothing is walked (audit_chain.py logs it once); the walk starts the round after it.

Where a walk starts: the last row this process walked (kept between rounds), else the head of the newest stored
checkpoint that commits to the erase rows under a genuine signature (a replica's, since restarted), else the log's
start - once per process, on a log no v2 checkpoint covers yet (the first deployment of this change): at most
ROWS_PER_ROUND rows a round, so a long log is committed to over a few rounds, each page re-arming the round's
watchdog. Then a round walks the rows appended since the last one (one interval's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from vault_service.domain.audit import GENESIS_HASH, ChainWalk
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.erase_commitment import ERASE_ACTION, NO_ERASE_ROWS, EraseCommitment
from vault_service.domain.segment_check import HASHED_PER_PAUSE, SEGMENT_PAGE_ROWS
from vault_service.service.checkpoint_ports import CheckpointStore
from vault_service.service.erase_commitment_check import newest_genuine

log = logging.getLogger(__name__)

_heads_changed = 0
"""Rounds whose head row, read again by the walk, was not the row the round read (review 47, R47-13)."""


def erase_walk_heads_changed() -> int:
    """How many rounds' heads changed under the walk (`tokenvault_erase_walk_heads_changed_total`; R47-13).

    The owner rewrote the head row between the round's read and the walk's: a tamper signal, not an outage.
    """
    return _heads_changed


ROWS_PER_ROUND = 100_000
"""Rows one round walks at most (~2.5 s at ~25 us a row read and hashed): the first walk of a long log spans rounds."""


@dataclass
class _Walked:
    """Where the walk stands: the last row it holds, and the erase rows up to it."""

    row_id: int
    row_hash: bytes
    erasures: EraseCommitment
    chain: ChainWalk


class EraseCommitments:
    """Computes the erase-row commitment of the heads the upkeep signs (see the module's doc)."""

    def __init__(
        self,
        store: CheckpointStore,
        genuine: Callable[[Checkpoint], bool],
        progress: Callable[[], None],
        pause: Callable[[], None],
        rows_per_round: int = ROWS_PER_ROUND,
    ) -> None:
        """`genuine` checks a stored checkpoint's signature; `progress` is told of each page, `pause` between hashes."""
        self._store = store
        self._genuine = genuine
        self._progress = progress
        self._pause = pause
        self._rows_per_round = rows_per_round
        self._walked: _Walked | None = None
        self._broken_told = 0  # the row a broken walk was last reported at (each reported once)
        self._held: int | None = None  # the first row found changed ahead of the walk: never walked past (R47-2)
        self._head_changed_told: set[int] = set()  # heads found changed under the walk, each logged once (R47-13)

    def _hold(self, walked: int, changed: Sequence[int]) -> None:
        """Stop the walk before the first of `changed` it has not walked yet (logged once per row; R47-2)."""
        ahead = [row_id for row_id in changed if row_id > walked]
        if not ahead or (self._held is not None and self._held <= min(ahead)):
            return
        self._held = min(ahead)
        log.error(
            "audit row %d, appended by this service, was found missing or changed before the erase rows were"
            " committed up to it: this process signs checkpoints without a commitment to the erase rows from there"
            " on (a commitment over it would endorse the change). Report it to the security team and run audit"
            " verify",
            self._held,
        )

    def commit(self, head: ChainHead, changed: Sequence[int] = ()) -> ChainHead:
        """`head` with its erase-row commitment when the walk reaches it holding; else `head` as it is (v1).

        `changed`: rows this service appended that the round's own check found missing or changed (review 47,
        R47-2). The walk never goes past the first of them not yet walked, for the rest of this process: a commitment
        signed over it would endorse the owner's change (an erase row relabelled before any walk reached it), and
        every later start would match it. On a database before migration 0070 (no column to store a commitment in)
        `head` as it is, nothing walked.
        """
        if not self._store.holds_erase_commitments():
            return head
        walked = self._walked or self._start(head)
        self._hold(walked.row_id, changed)
        if walked.row_id > head.head_id:  # the log's head went below a row walked: walked again from a checkpoint
            log.error(
                "the audit log's head, row %d, is below row %d this process committed the erase rows up to: rows"
                " were removed. Report it to the security team and run audit verify",
                head.head_id,
                walked.row_id,
            )
            self._walked = None
            return head
        rows = 0
        while walked.row_id < head.head_id and rows < self._rows_per_round:
            page = self._store.segment(walked.row_id, head, (), min(SEGMENT_PAGE_ROWS, self._rows_per_round - rows))
            if not page:
                break
            for row in page:
                if self._held is not None and row.record_id >= self._held:
                    self._walked = walked
                    return head  # a row found changed: no commitment over it, signed v1 (R47-2)
                record = row.record
                problem = "larger than any audit row" if record is None else walked.chain.problem(record)
                if record is None or problem is not None:
                    self._walked = walked
                    self._tell_broken(row.record_id, problem or "")
                    return head
                walked.row_id, walked.row_hash = record.record_id, record.row_hash
                if record.event.action == ERASE_ACTION:
                    walked.erasures = walked.erasures.after(record.record_id, record.row_hash)
                rows += 1
                if rows % HASHED_PER_PAUSE == 0:
                    self._pause()
            self._progress()
        self._walked = walked
        if walked.row_id != head.head_id:
            return head  # not reached yet: signed without a commitment, the walk goes on next round
        if walked.row_hash != head.head_hash:  # the head read is not the row walked: changed since
            self._walked = None
            self._tell_head_changed(head.head_id)
            return head
        return replace(head, erasures=walked.erasures)

    def _start(self, head: ChainHead) -> _Walked:
        """From the newest genuine committed checkpoint at or below `head`, else from the log's start.

        A committed checkpoint whose signature does not hold (planted by the vault's own role: review 47, R47-6) is
        passed over for the newest genuine one below it, not taken for the log's start (a full re-walk).
        """
        stored = newest_genuine(self._store, self._genuine, lambda checkpoint: None, below=head.head_id + 1)
        at = stored.head if stored is not None else None
        if at is not None and at.erasures is not None:
            return _Walked(at.head_id, at.head_hash, at.erasures, ChainWalk.resumed(at.head_hash))
        return _Walked(0, GENESIS_HASH, NO_ERASE_ROWS, ChainWalk())

    def _tell_head_changed(self, head_id: int) -> None:
        """Count each time, and log once per head, a head row that changed between the round's read and the walk's."""
        global _heads_changed
        _heads_changed += 1
        if head_id in self._head_changed_told:
            return
        self._head_changed_told.add(head_id)
        log.error(
            "audit row %d, the head this round read, was not the same row when the erase-row walk read it: changed in"
            " the database meanwhile. The head is signed without a commitment to the erase rows and the walk starts"
            " again. Report it to the security team and run audit verify",
            head_id,
        )

    def _tell_broken(self, row_id: int, problem: str) -> None:
        """Log, once per row, that the walk stopped at a row that does not hold: no commitment signed meanwhile."""
        if row_id == self._broken_told:
            return
        self._broken_told = row_id
        log.error(
            "audit row %d does not hold in the chain (%s): checkpoints are signed without a commitment to the erase"
            " rows until it does. Report it to the security team and run audit verify",
            row_id,
            problem,
        )
