"""A signed checkpoint's commitment to the audit log's erase rows up to its head (attack 46, A46-1/A46-3).

A starting replica learns which tokens were erased from the rows of vault.audit_log whose `action` is 'erase'. The
database owner can relabel a row's `action` for the length of that read - a genuine erase row as something else (the
erasure hidden: the replica hands the erased token out), or a reveal row as an erase row (a live token refused) -
with its row hash recomputed and the next row relinked: the chain holds wherever the replica looks. So each checkpoint
the audit upkeep signs (message v2, domain/checkpoints.py) also commits to the erase rows up to its head: how many
there are, and a running SHA-256 over the id and row hash of each, in id order. The upkeep computes it from rows it
hashed and linked up to the head it signs (service/erase_commitments.py); a replica reading the erase rows checks
them against the newest signed commitment, and `audit verify` at every checkpoint head.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ERASE_ACTION = "erase"
"""The `action` of the rows the commitment covers (every one, whatever its outcome or `revealed`)."""


@dataclass(frozen=True)
class EraseCommitment:
    """The erase rows of the log up to a head: their number and the running digest over (id, row hash) of each."""

    count: int
    digest: bytes

    def after(self, record_id: int, row_hash: bytes) -> EraseCommitment:
        """The commitment with one more erase row (the next one in id order)."""
        step = hashlib.sha256(self.digest)
        step.update(record_id.to_bytes(8, "big", signed=True))
        step.update(row_hash)
        return EraseCommitment(self.count + 1, step.digest())

    def differs(self, found: EraseCommitment, head_id: int) -> str | None:
        """Why the erase rows `found` up to `head_id` are not those this signed commitment names (None: they are)."""
        if found == self:
            return None
        counted = (
            f"{found.count} erase row(s) where it signed {self.count}"
            if found.count != self.count
            else f"as many erase rows ({found.count}) but other ones"
        )
        return (
            f"the audit log's erase rows up to row {head_id} are not those its signed checkpoint commits to: {counted}"
            " (a row's action relabelled to or from 'erase' with its hash recomputed, or an erase row planted,"
            " removed or changed)"
        )


NO_ERASE_ROWS = EraseCommitment(0, bytes(32))
"""The commitment of a log with no erase row (where every running digest starts)."""


class EraseTally:
    """Erase rows counted into a commitment as they are read, in id order, up to a head (`upto`; None: no bound)."""

    def __init__(self, start: EraseCommitment = NO_ERASE_ROWS, after: int = 0, upto: int | None = None) -> None:
        self.value = start
        self._after = after
        self._upto = upto
        self._last = after

    @property
    def upto(self) -> int | None:
        """The head the tally counts up to (None: no bound)."""
        return self._upto

    def add(self, record_id: int, row_hash: bytes) -> None:
        """One erase row as read (ids increasing; one at or below the last counted, or beyond `upto`, is skipped)."""
        if record_id <= self._last or (self._upto is not None and record_id > self._upto):
            return
        self._last = record_id
        self.value = self.value.after(record_id, row_hash)
