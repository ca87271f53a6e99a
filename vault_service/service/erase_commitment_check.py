"""A replica's check of the erase rows it reads against the signed checkpoints' commitment (attack 46, A46-1/A46-3).

The erased-token set learns from the rows whose `action` is 'erase' (service/erased_tokens.py), and the database owner
can relabel a row's `action` for the length of a replica's read, its row hash recomputed and the next row relinked:
a genuine erasure hidden (the erased token handed out) or a reveal row made an erase row (a live token refused). The
audit upkeep signs each checkpoint with the count and running digest of the erase rows up to its head
(service/erase_commitments.py). So:
- at start (`for_start`, then `started`), the newest stored checkpoint carrying a commitment is read, its signature
  checked offline with the Transit public keys, and the erase rows the start-up read meets up to its head are
  counted into a digest on the way (no second read); a checkpoint whose signature does not hold, or rows that are
  not those it commits to, refuse the start (KeyMaintainer raises EraseRowsUncommitted: exit 1);
- each key-check round (`problem`), a newer such checkpoint is checked the same way from the last one verified (the
  erase rows between the two heads read again): a mismatch makes the replica report its database unhealthy until a
  round finds the rows as signed.
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
from vault_service.service.erased_tokens import ERASE_ROWS_PAGE, EraseRows

log = logging.getLogger(__name__)


class CommittedCheckpoints(Protocol):
    """Where the signed checkpoints are read (the audit chain's store)."""

    def newest_committed_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint committing to the erase rows (None: none), its signature unchecked."""
        ...


class EraseCommitmentCheck:
    """Checks the erase rows a replica reads against the newest signed commitment (see the module's doc)."""

    def __init__(self, checkpoints: CommittedCheckpoints, genuine: Callable[[Checkpoint], bool]) -> None:
        """`genuine(checkpoint)`: whether its signature holds under the Transit signing key's public keys."""
        self._checkpoints = checkpoints
        self._genuine = genuine
        self._verified: tuple[int, EraseCommitment] = (0, NO_ERASE_ROWS)
        """The head whose commitment the rows last matched, and that commitment ((0, none) before any)."""
        self._checking: Checkpoint | None = None
        self._told = ""

    @property
    def verified_head(self) -> int:
        """The head of the newest checkpoint whose erase-row commitment this replica's reads matched (0: none)."""
        return self._verified[0]

    def for_start(self) -> tuple[EraseTally | None, str | None]:
        """The tally the start-up read feeds (None: no checkpoint commits to the erase rows yet), or why none can."""
        checkpoint = self._checkpoints.newest_committed_checkpoint()
        if checkpoint is None:
            log.info("no audit checkpoint commits to the erase rows yet: the start-up read is checked by hash only")
            return None, None
        if not self._genuine(checkpoint):
            return None, _bad_signature(checkpoint)
        self._checking = checkpoint
        return EraseTally(upto=checkpoint.head.head_id), None

    def started(self, tally: EraseTally | None) -> str | None:
        """Why the erase rows the start-up read counted are not those signed (None: they are, or none signed)."""
        checkpoint, self._checking = self._checking, None
        if tally is None or checkpoint is None or checkpoint.head.erasures is None:
            return None
        return self._compared(checkpoint, tally.value)

    def problem(self, rows: EraseRows) -> str | None:
        """A key-check round's check of a checkpoint newer than the last verified (None: it holds, or none newer).

        Reads the erase rows between the two heads; logs a finding when it changes.
        """
        checkpoint = self._checkpoints.newest_committed_checkpoint()
        head_id, commitment = self._verified
        if checkpoint is None or checkpoint.head.erasures is None or checkpoint.head.head_id <= head_id:
            return self._tell(None)
        if not self._genuine(checkpoint):
            return self._tell(_bad_signature(checkpoint))
        tally = EraseTally(commitment, after=head_id, upto=checkpoint.head.head_id)
        after = head_id
        while True:
            page = rows.erase_rows(after, ERASE_ROWS_PAGE)
            for row in page.rows:
                tally.add(row.record_id, b"" if row.record is None else row.record.row_hash)
            if not page.more or not page.rows or page.rows[-1].record_id >= checkpoint.head.head_id:
                break
            after = page.rows[-1].record_id
        return self._tell(self._compared(checkpoint, tally.value))

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
        self._told = problem or ""
        return problem


def _bad_signature(checkpoint: Checkpoint) -> str:
    return (
        f"the newest audit checkpoint committing to the erase rows (row {checkpoint.head.head_id}) does not carry a"
        " valid signature of the signing key: planted or changed in vault.audit_checkpoints"
    )
