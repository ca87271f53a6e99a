"""The ports of the audit chain's anchoring: where its head is read and checkpoints are kept, and the signer.

`CheckpointAnchor` (checkpoint_anchor.py) and `AuditUpkeep` (audit_upkeep.py) work through them;
the Postgres audit log (adapters/postgres/audit.py, its reads in audit_chain.py) and the
Transit signer (adapters/transit.py) implement them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vault_service.domain.checkpoints import ChainHead, Checkpoint, IdSequence
from vault_service.domain.database_probe import ProbeAnswer
from vault_service.domain.segment_check import SegmentRow


class Signer(Protocol):
    """Signs with a key held by Vault/OpenBao."""

    @property
    def key_name(self) -> str:
        """The signing key's name."""
        ...

    def sign(self, data: bytes) -> str:
        """A signature of `data` (`vault:v<N>:<base64>`)."""
        ...


class CheckpointStore(Protocol):
    """Where the chain head is read and checkpoints are kept."""

    def head(self, since: ChainHead | None = None) -> ChainHead | None:
        """The chain's newest row (None when empty)."""
        ...

    def newest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (None when none)."""
        ...

    def committed_checkpoints(self, above: int, below: int | None, rows: int) -> list[Checkpoint]:
        """Up to `rows` stored checkpoints committing to the erase rows, heads in (`above`, `below`), newest first.

        Their signatures unchecked (the vault's own role can plant one: review 47, R47-6).
        """
        ...

    def holds_erase_commitments(self) -> bool:
        """Whether a checkpoint's erase-row commitment can be stored (False on a database before migration 0070)."""
        ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a checkpoint; False when another replica stored one for the same head."""
        ...

    def id_sequence(self) -> IdSequence:
        """The log's newest id and the state of the id sequence its rows are numbered from."""
        ...

    def segment(self, after_id: int, head: ChainHead, own: Sequence[tuple[int, bytes]], rows: int) -> list[SegmentRow]:
        """The next page (at most `rows` rows, bounded in bytes) of the chain after `after_id` up to `head`, by id.

        The fields of the rows of `own` ((id, row_hash) this process appended) are not fetched
        when shown with that hash; an empty page ends the segment.
        """
        ...

    def sever(self) -> int:
        """Close, at the socket, the connections the statements above hold now (from another thread); how many.

        The statement waiting on one raises at once; nothing in the database can catch that.
        """
        ...

    def probe_database(self) -> ProbeAnswer:
        """How the database meets a connection of its own (a probe, outside the vault's pool).

        Asked after a round found no pooled connection within the pool's timeout: an outage only
        when SILENT; a server that refuses the probe answers (domain/database_probe.py).
        """
        ...
