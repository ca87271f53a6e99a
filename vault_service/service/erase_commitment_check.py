"""A replica's check of the erase rows it reads against the signed checkpoints' commitment (attack 46, A46-1/A46-3).

The erased-token set learns from the rows whose `action` is 'erase' (service/erased_tokens.py), and the database owner
can relabel a row's `action` for the length of a replica's read, its row hash recomputed and the next row relinked:
a genuine erasure hidden (the erased token handed out) or a reveal row made an erase row (a live token refused). The
audit upkeep signs each checkpoint with the count and running digest of the erase rows up to its head
(service/erase_commitments.py). So:
- at start (`for_start`, then `started`), the newest stored checkpoint carrying a commitment is read, its signature
  checked offline with the Transit public keys, and the erase rows the start-up read meets up to its head are
  counted into a digest on the way (no second read); rows that are not those it commits to refuse the start
  (KeyMaintainer raises EraseRowsUncommitted: exit 1);
- each key-check round (`problem`), a newer such checkpoint is checked the same way from the last one verified (the
  erase rows between the two heads read again): a mismatch makes the replica report its database unhealthy until a
  round finds the rows as signed;
- after a mismatch, each round re-reads every erase row to rebuild the erased-token set (review 47, R47-1), counted
  from the log's start up to the newest such checkpoint (`for_rebuild`, `rebuilt`): the rebuild is applied only when
  that read matches it (attack 49, A49-1: an unchecked rebuild read let the owner hide an old committed erase row
  for its length, and the replica forgot the erasure for its life).
A stored checkpoint whose signature does not hold (or whose commitment is half NULL, R47-3) is skipped, logged at
ERROR once and counted as planted (`on_planted`): the vault's own role can insert one (review 47, R47-6), so it must
not stop the fleet; the newest *genuine* one is checked instead (`newest_genuine`, also the upkeep's walk's start).
Left (docs/threat-model.md): the checkpoints are read from the owner's table, so deleting the newer ones makes the
replica trust an older genuine one (the rows after its head are checked by hash and link only; `audit verify
--exported` names the deleted checkpoints); with none at all, no commitment is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.erase_commitment import NO_ERASE_ROWS, EraseCommitment, EraseTally
from vault_service.service.erased_tokens import ERASE_ROWS_PAGE, ErasedTokens, EraseRows
from vault_service.service.ports import EraseRow

log = logging.getLogger(__name__)


_standing = 0
"""1 while this replica's last running check named a mismatch with a signed commitment, else 0 (R47-15)."""
_found = 0
"""Mismatches this replica's running checks found (each once, when it appears: a put-back clears `_standing`)."""


def erase_rows_uncommitted() -> int:
    """1 while the erase rows this replica reads are not those a signed checkpoint commits to (review 47, R47-15).

    Exported as `tokenvault_erase_rows_uncommitted` (alert EraseRowsUncommitted): the replica answers NOT_SERVING
    meanwhile, which paged only as "database unreachable ... recovers by itself" - an outage's alert, for tampering.
    """
    return _standing


def erase_rows_uncommitted_found() -> int:
    """How many mismatches this replica's running checks found (`tokenvault_erase_rows_uncommitted_found_total`)."""
    return _found


def _observed(problem: str | None, new: bool) -> None:
    global _standing, _found
    _standing = 0 if problem is None else 1
    _found += 1 if problem is not None and new else 0


class CommittedCheckpoints(Protocol):
    """Where the signed checkpoints are read (the audit chain's store)."""

    def committed_checkpoints(self, above: int, below: int | None, rows: int) -> list[Checkpoint]:
        """Up to `rows` stored checkpoints committing to the erase rows, heads in (`above`, `below`), newest first."""
        ...


CANDIDATES_PAGE = 64
"""Committed checkpoints read a page while looking past planted ones for the newest genuine one (R47-6)."""


def newest_genuine(
    checkpoints: CommittedCheckpoints,
    genuine: Callable[[Checkpoint], bool],
    planted: Callable[[Checkpoint], None],
    above: int = 0,
    below: int | None = None,
) -> Checkpoint | None:
    """The newest stored checkpoint, head in (`above`, `below`), committing to the erase rows under a genuine signature.

    None: none. Each one passed over on the way is handed to `planted` (review 47, R47-6, R47-3).

    The vault's own role may insert checkpoint rows (the insert trigger checks head, count and time, never the
    signature): one planted must neither stop a replica nor become the base the rows are checked against.
    """
    while True:
        page = checkpoints.committed_checkpoints(above, below, CANDIDATES_PAGE)
        for checkpoint in page:
            if checkpoint.head.erasures is not None and checkpoint.head.erasures.count >= 0 and genuine(checkpoint):
                return checkpoint
            planted(checkpoint)
        if len(page) < CANDIDATES_PAGE:
            return None
        below = page[-1].head.head_id


class EraseCommitmentCheck:
    """Checks the erase rows a replica reads against the newest signed commitment (see the module's doc)."""

    def __init__(
        self,
        checkpoints: CommittedCheckpoints,
        genuine: Callable[[Checkpoint], bool],
        on_planted: Callable[[], None] = lambda: None,
    ) -> None:
        """`genuine(checkpoint)`: whether its signature holds under the Transit signing key's public keys.

        `on_planted` counts each checkpoint passed over as planted (once per head).
        """
        self._checkpoints = checkpoints
        self._genuine = genuine
        self._on_planted = on_planted
        self._planted_told: set[int] = set()
        self._verified: tuple[int, EraseCommitment] = (0, NO_ERASE_ROWS)
        """The head whose commitment the rows last matched, and that commitment ((0, none) before any)."""
        self._checking: Checkpoint | None = None
        self._rebuilding: tuple[int, EraseCommitment] = (0, NO_ERASE_ROWS)
        """The head and commitment the last `for_rebuild` tally counts to."""
        self._told = ""

    @property
    def verified_head(self) -> int:
        """The head of the newest checkpoint whose erase-row commitment this replica's reads matched (0: none)."""
        return self._verified[0]

    def for_start(self) -> tuple[EraseTally | None, str | None]:
        """The tally the start-up read feeds (None: no checkpoint commits to the erase rows yet), or why none can."""
        checkpoint = newest_genuine(self._checkpoints, self._genuine, self._planted)
        if checkpoint is None:
            log.info("no audit checkpoint commits to the erase rows yet: the start-up read is checked by hash only")
            return None, None
        self._checking = checkpoint
        return EraseTally(upto=checkpoint.head.head_id), None

    def started(self, tally: EraseTally | None) -> str | None:
        """Why the erase rows the start-up read counted are not those signed (None: they are, or none signed)."""
        checkpoint, self._checking = self._checking, None
        if tally is None or checkpoint is None or checkpoint.head.erasures is None:
            return None
        return self._compared(checkpoint, tally.value)

    def for_rebuild(self) -> EraseTally | None:
        """The tally a running replica's re-read of every erase row feeds (attack 49, A49-1); None: nothing signed.

        It counts from the log's start up to the head of the newest genuine checkpoint above the one verified last,
        else up to that verified one: a rebuild of the erased-token set is applied only when its read matches
        (`rebuilt`), so rows the checkpoints cover are never taken from an unchecked read.
        """
        head_id, commitment = self._verified
        checkpoint = newest_genuine(self._checkpoints, self._genuine, self._planted, above=head_id)
        if checkpoint is not None and checkpoint.head.erasures is not None:
            head_id, commitment = checkpoint.head.head_id, checkpoint.head.erasures
        self._rebuilding = (head_id, commitment)
        return EraseTally(upto=head_id) if head_id else None

    def rebuilt(self, tally: EraseTally) -> str | None:
        """Why the erase rows a rebuilding read counted (`for_rebuild`) are not those signed (None: they are).

        A match makes that checkpoint the verified one; a finding is logged when it changes, as `problem`'s.
        """
        head_id, commitment = self._rebuilding
        problem = commitment.differs(tally.value, head_id)
        if problem is None and head_id >= self._verified[0]:
            self._verified = (head_id, commitment)
        return self._tell(problem)

    def problem(self, rows: EraseRows, erased: ErasedTokens | None = None) -> str | None:
        """A key-check round's check of a checkpoint newer than the last verified (None: it holds, or none newer).

        Reads the erase rows between the two heads; logs a finding when it changes. When they match, the stored row
        hashes this read counted of `erased`'s failing rows are the signed ones: handed to it (`vouch`, attack 50,
        A50-3: such a row, read again by id later, is learned only as that signed row); and the rows it read that name
        a token `erased` does not know are signed erase rows: those that hold are learned (`learn_signed`, attack 51,
        A51-3: an old erase row hidden from a start-up read that no commitment checked, put back after the first
        round moved the learn window past it, was counted by this matching check and never learned - the replica
        forgot the erasure for its life, healthy). Only those rows are kept during the read (normally none).
        """
        head_id, commitment = self._verified
        checkpoint = newest_genuine(self._checkpoints, self._genuine, self._planted, above=head_id)
        if checkpoint is None or checkpoint.head.erasures is None:
            return self._tell(None)
        tally = EraseTally(commitment, after=head_id, upto=checkpoint.head.head_id)
        after = head_id
        failing = set() if erased is None else erased.failing_ids()
        counted: dict[int, bytes] = {}
        unlearned: list[EraseRow] = []
        while True:
            page = rows.erase_rows(after, ERASE_ROWS_PAGE)
            for row in page.rows:
                tally.add(row.record_id, b"" if row.record is None else row.record.row_hash)
                if row.record is None or row.record_id > checkpoint.head.head_id:
                    continue
                if row.record_id in failing:
                    counted[row.record_id] = row.record.row_hash
                if erased is not None and not erased.knows(row.record.event.revealed):
                    unlearned.append(row)
            if not page.more or not page.rows or page.rows[-1].record_id >= checkpoint.head.head_id:
                break
            after = page.rows[-1].record_id
        problem = self._compared(checkpoint, tally.value)
        if problem is None and erased is not None and counted:
            erased.vouch(counted)
        if problem is None and erased is not None and unlearned:
            erased.learn_signed(unlearned)
        return self._tell(problem)

    def _compared(self, checkpoint: Checkpoint, found: EraseCommitment) -> str | None:
        head = checkpoint.head
        assert head.erasures is not None
        problem = head.erasures.differs(found, head.head_id)
        if problem is None:
            self._verified = (head.head_id, head.erasures)
        return problem

    def _tell(self, problem: str | None) -> str | None:
        """Log a finding at ERROR when it changes (a round repeating it logs nothing more); the finding."""
        if problem is not None and problem != self._told:
            log.error("%s: report it to the security team and run audit verify", problem)
        _observed(problem, problem != self._told)
        self._told = problem or ""
        return problem

    def _planted(self, checkpoint: Checkpoint) -> None:
        """Log at ERROR and count, once per head, a committed checkpoint whose signature does not hold (R47-6)."""
        if checkpoint.head.head_id in self._planted_told:
            return
        self._planted_told.add(checkpoint.head.head_id)
        self._on_planted()
        log.error(
            "the audit checkpoint at row %d commits to the erase rows without a valid signature of the signing key:"
            " planted or changed in vault.audit_checkpoints (the vault's own role can insert one), passed over for"
            " the newest genuine one. Report it to the security team and run audit verify",
            checkpoint.head.head_id,
        )
