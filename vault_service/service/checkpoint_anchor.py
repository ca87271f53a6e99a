"""Checkpoints of the audit chain's head: signed by Vault, stored in the database, exported outside it.

The audit upkeep (service/audit_upkeep.py) hands each round's head to `CheckpointAnchor`, which
signs it with the Transit signing key (sign-only for the service), stores the checkpoint in
vault.audit_checkpoints and exports it outside Postgres (a JSON log line, and a line in the
checkpoint file when one is configured), unless a genuine checkpoint already anchors it. The exporters are
in checkpoint_export.py, the store and signer it works through in checkpoint_ports.py.

A database checkpoint naming a row beyond the chain's head cannot be legitimate (a checkpoint
is stored only once its rows are committed): the database owner planted it, and the table
refuses every later checkpoint as "not newer". It then logs an error and goes on
signing and exporting the real head without storing it, so the exported copy keeps anchoring
the log (audit-verify checks every exported checkpoint against the rows).

So it does when the database refuses to store a checkpoint for any reason other than being
unreachable (a check or trigger raising, a constraint, a privilege taken away): the head is
exported anyway, and the error logged and counted every round. Otherwise rows written while the
database refuses would be anchored nowhere, and once it accepts checkpoints again - a restart
counts the log afresh - they could be deleted with audit-verify reporting the log intact; the
exported copy, naming those rows with the count this process made, contradicts such a deletion.

Likewise a row beyond the audit id sequence (the chain trigger numbers every row with nextval)
was written behind it: the head is the newest row within the sequence, so the rows after such
a plant - numbered below it - go on being signed, and it logs an error (ids only) and
counts every round that finds one. So it does when the sequence was altered to hand out ids
out of commit order (a per-session cache, a negative increment).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import StorageError, VaultError
from vault_service.service.checkpoint_ports import CheckpointStore, Signer

log = logging.getLogger(__name__)


def same_head(one: ChainHead, other: ChainHead) -> bool:
    """Whether two heads are the same row of the same chain (id, hash and row count; the time they were read aside)."""
    return (one.head_id, one.head_hash, one.row_count) == (other.head_id, other.head_hash, other.row_count)


class CheckpointAnchor:
    """Signs, stores and exports checkpoints of the heads the upkeep read; reports plants, refusals, a bad sequence."""

    def __init__(
        self,
        store: CheckpointStore,
        signer: Signer,
        export: Callable[[Checkpoint], None],
        genuine: Callable[[Checkpoint], bool],
        on_exported: Callable[[Checkpoint], None],
        on_planted: Callable[[], None],
        on_sequence_tampered: Callable[[], None],
        on_refused: Callable[[], None],
    ) -> None:
        """The callbacks are AuditUpkeep's (see there); `genuine` checks a stored checkpoint's signature offline."""
        self._store = store
        self._signer = signer
        self._export = export
        self._genuine = genuine
        self._on_exported = on_exported
        self._on_planted = on_planted
        self._on_sequence_tampered = on_sequence_tampered
        self._on_refused = on_refused
        self._exported_head = 0  # the head of the last checkpoint this process exported
        self._exported: ChainHead | None = None  # the head of the last checkpoint this process exported
        self._planted_seen = 0  # the planted checkpoint's head last reported (each reported once)
        self._refusal_seen = ""  # the last refusal logged (a refusal repeating every round is logged once)
        self._tamper_seen = (0, 1, 1)  # the planted row, cache and increment last reported (each reported once)
        self._sequence_unreadable_told = False  # a database before migration 0015: said once per process
        self.missing: tuple[int, ...] = ()
        """Appended rows found missing, not yet named in an exported checkpoint."""

    def exported_as(self, head: ChainHead) -> bool:
        """Whether this process exported a checkpoint of `head` itself (id, hash and row count)."""
        return self._exported is not None and same_head(self._exported, head)

    def export_checked_head(self, newest: Checkpoint | None, head: ChainHead) -> Checkpoint:
        """Export a checkpoint of `head`, the head this round checked its rows against, naming any rows missing.

        Reached when this round's anchoring exported no checkpoint of that very head: another
        replica's checkpoint anchors it (exported by that replica, or by no one: one this
        process signed, whose round was severed while the INSERT waited, and which the database
        then stored), or the head is not the one this process exported before at its id. The
        stored checkpoint is exported again when it is genuine and of exactly this head, else
        the head is signed now; either way the exported copy vouches for the chain this round
        checked, and the rows can be forgotten.
        """
        if head.head_id <= self._exported_head and not self.exported_as(head):
            log.error(
                "the audit log's head, row %d, is not the head this process exported a checkpoint of at row %d"
                " (the row was changed or later rows removed since): it is exported again as it is now. Report it"
                " to the security team and run audit-verify against the exported checkpoints",
                head.head_id,
                self._exported_head,
            )
        if newest is not None and same_head(newest.head, head) and self._genuine(newest):
            checkpoint = newest.anchor()
        else:
            checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        self._export_and_note(checkpoint)
        return checkpoint

    def anchor(self, newest: Checkpoint | None, head: ChainHead | None) -> Checkpoint | None:
        """Sign, store and export `head` unless a checkpoint already anchors it; the checkpoint exported."""
        last = newest.head.head_id if newest else 0
        if last > (head.head_id if head else 0):
            return self._anchor_beside_a_planted_checkpoint(head, last, "beyond the audit log's head")
        if head is None:
            return None
        if head.head_id <= last:  # the database says the head is anchored: by a checkpoint that vouches for it?
            assert newest is not None
            if last <= self._exported_head:
                return None
            if self._vouches(newest, head):
                # Another process's genuine checkpoint - a replica's, or an admin command's, whose only
                # other copies may be the operator's terminal - is exported here too, so this
                # service's log carries every checkpoint of the chain (review 19, R19-2).
                checkpoint = newest.anchor()
                self._export_and_note(checkpoint)
                return checkpoint
            return self._anchor_beside_a_planted_checkpoint(
                head, last, "at the head without the signing key's signature"
            )
        checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        try:
            stored = self._store.add_checkpoint(checkpoint)
        except StorageError as error:  # refused, not unreachable (DatabaseUnavailable: the round is postponed)
            if self._stored_by_another(head):  # a replica's genuine checkpoint, stored and exported, covers it
                return None
            return self._anchor_despite_a_refusal(checkpoint, error)
        self._refusal_seen = ""
        if not stored:
            if self._stored_by_another(head):
                return None
            self._on_planted()
            log.error(
                "the database did not store the audit checkpoint of row %d and holds none that vouches for it"
                " (a rule or trigger on vault.audit_checkpoints?); it is exported anyway. Report it to the"
                " security team and run audit-verify",
                head.head_id,
            )
        self._export_and_note(checkpoint)
        return checkpoint

    def _stored_by_another(self, head: ChainHead) -> bool:
        """Whether a refused checkpoint of `head` was refused because another replica's genuine one covers it."""
        newest = self._store.newest_checkpoint()
        return newest is not None and newest.head.head_id >= head.head_id and self._vouches(newest, head)

    def check_sequence(self) -> None:
        """Report a row beyond the audit id sequence, or a sequence that numbers rows out of commit order.

        The head is taken within the sequence (see the module's doc); a sequence with a cache
        hands each pooled session a block of ids, so rows committed later can take lower ids
        than the head already counted and stay out of every checkpoint.
        """
        try:
            sequence = self._store.id_sequence()
        except VaultError as error:  # e.g. a database before migration 0015: checkpoints go on regardless
            self._on_sequence_tampered()  # counted every round: the alert stays up until the migration runs
            if not self._sequence_unreadable_told:
                self._sequence_unreadable_told = True
                log.error(
                    "cannot check the audit id sequence (%s); apply the migrations (0015). Counted in"
                    " tokenvault_audit_id_sequence_tampered every round until then (logged once)",
                    error,
                )
            return
        if not sequence.rows_beyond() and sequence.numbers_in_order():
            return
        self._on_sequence_tampered()
        seen = (sequence.newest_row if sequence.rows_beyond() else 0, sequence.cache, sequence.increment)
        if seen == self._tamper_seen:
            return
        self._tamper_seen = seen
        if sequence.rows_beyond():
            log.error(
                "the audit log holds row %d, beyond the id sequence's last value %d: the database numbers every"
                " row from that sequence, so the row was written behind the service's back. Checkpoints go on"
                " for the rows within the sequence; report it to the security team and run audit-verify",
                sequence.newest_row,
                sequence.last_value,
            )
        if not sequence.numbers_in_order():
            log.error(
                "the audit id sequence vault.audit_log_id_seq was altered (cache %d, increment %d): rows may be"
                " numbered out of commit order and escape the checkpoints. Report it to the security team, run"
                " audit-verify, and restore it (ALTER SEQUENCE vault.audit_log_id_seq CACHE 1 INCREMENT 1)",
                sequence.cache,
                sequence.increment,
            )

    def _vouches(self, stored: Checkpoint, head: ChainHead) -> bool:
        """Whether another replica's `stored` checkpoint really anchors `head` (signed, and naming it)."""
        names_it = stored.head.head_id != head.head_id or (
            stored.head.head_hash == head.head_hash and stored.head.row_count == head.row_count
        )
        return names_it and self._genuine(stored)

    def _anchor_beside_a_planted_checkpoint(
        self, head: ChainHead | None, planted: int, where: str
    ) -> Checkpoint | None:
        """Sign and export `head` without storing it: the database's newest checkpoint (`planted`) is not genuine."""
        self._on_planted()
        if planted != self._planted_seen:
            self._planted_seen = planted
            log.error(
                "the database's newest audit checkpoint names row %d, %s (row %d):"
                " it was written behind the service's back, and the database refuses every checkpoint after it."
                " Checkpoints go on in the exported copy only; report it to the security team and run audit-verify",
                planted,
                where,
                head.head_id if head else 0,
            )
        if head is None or head.head_id <= self._exported_head:
            return None
        checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        self._export_and_note(checkpoint)
        return checkpoint

    def _anchor_despite_a_refusal(self, checkpoint: Checkpoint, error: StorageError) -> Checkpoint | None:
        """Export `checkpoint` though the database refused to store it (each head once), and report the refusal.

        The error names the database's error class only (see the Postgres adapter), never row data.
        """
        self._on_refused()
        head_id = checkpoint.head.head_id
        if str(error) != self._refusal_seen:
            self._refusal_seen = str(error)
            log.error(
                "the database refused to store the audit checkpoint of row %d (%s); it is exported anyway, and"
                " every later one while the refusal lasts. Report it to the security team and run audit-verify"
                " against the exported checkpoints",
                head_id,
                error,
            )
        if head_id <= self._exported_head:
            return None
        self._export_and_note(checkpoint)
        return checkpoint

    def _export_and_note(self, checkpoint: Checkpoint) -> None:
        if self.missing:  # named under a signature of their own: the stored checkpoint stays the head's alone
            checkpoint = replace(checkpoint, missing=self.missing)
            checkpoint = replace(checkpoint, missing_signature=self._signer.sign(checkpoint.missing_message()))
        self._export(checkpoint)
        self.missing = ()
        self._exported_head = checkpoint.head.head_id
        self._exported = checkpoint.head
        self._on_exported(checkpoint)
