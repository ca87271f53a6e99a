"""Signed checkpoints of the audit chain, and the verification of a log against them.

The chain alone only proves the rows agree with each other: whoever can write the table can
rewrite a row and recompute every later hash. A checkpoint fixes the chain's head (id, hash,
row count, time) under a signature made with a key held by Vault/OpenBao, which the vault
service may use to sign but nobody can export; anyone can verify it with the public key. Each
checkpoint is also exported outside Postgres, so deleting the newest rows *and* checkpoints is
caught by the exported copy. Rows newer than the last checkpoint are not anchored yet: that
window is the checkpoint interval.

An exported checkpoint may also name, under a signature of its own, rows the service appended
that the chain up to its head does not hold (see anchoring.py): audit-verify reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from vault_service.domain.audit import AuditRecord, ChainWalk
from vault_service.domain.erase_commitment import ERASE_ACTION, NO_ERASE_ROWS, EraseCommitment


@dataclass(frozen=True)
class ChainHead:
    """The newest row of the chain when a checkpoint was taken."""

    head_id: int
    head_hash: bytes
    row_count: int
    at: datetime
    erasures: EraseCommitment | None = None
    """The erase rows up to the head (domain/erase_commitment.py; None: a v1 checkpoint, committing to none)."""

    def message(self) -> bytes:
        """The exact bytes that are signed: v1 without an erase-row commitment, v2 with one (A46-3)."""
        at = self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fields = f"{self.head_id}:{self.row_count}:{self.head_hash.hex()}:{at}"
        if self.erasures is None:
            return f"tokenvault-audit-checkpoint:v1:{fields}".encode()
        erasures = f"{self.erasures.count}:{self.erasures.digest.hex()}"
        return f"tokenvault-audit-checkpoint:v2:{fields}:{erasures}".encode()


@dataclass(frozen=True)
class IdSequence:
    """The audit id sequence the chain trigger numbers every row from, and the log's newest row.

    Under the chain lock, a sequence that hands out one value at a time (no per-session cache),
    upwards, numbers rows in commit order, and no row lies beyond its last value: the head and
    the row counts rest on both. Only the database owner can change either.
    """

    newest_row: int
    """The highest id in the log (0: empty)."""
    last_value: int
    """The highest id the sequence handed out (0: none)."""
    cache: int
    increment: int

    def rows_beyond(self) -> bool:
        """Whether a row has an id the sequence never handed out (written behind it)."""
        return self.newest_row > self.last_value

    def numbers_in_order(self) -> bool:
        """Whether the sequence numbers rows in commit order (no cache, counting upwards)."""
        return self.cache == 1 and self.increment > 0


@dataclass(frozen=True)
class Checkpoint:
    """A chain head, and the Transit signature (`vault:v<N>:<base64>`) over its message."""

    head: ChainHead
    key_name: str
    signature: str
    missing: tuple[int, ...] = ()
    """Ids of rows the signing service appended that the chain up to `head` does not hold (exported only)."""
    missing_signature: str = ""
    """The signature over `missing_message()` (empty when nothing is missing)."""

    def missing_message(self) -> bytes:
        """The exact bytes signed for `missing`: the head they were checked against, and the ids."""
        ids = ",".join(str(i) for i in self.missing)
        return f"tokenvault-audit-rows-missing:v1:{self.head.head_id}:{self.head.head_hash.hex()}:{ids}".encode()

    def anchor(self) -> Checkpoint:
        """The checkpoint of the head alone (what the database stores), without the missing rows."""
        return Checkpoint(self.head, self.key_name, self.signature)

    def exported(self) -> dict[str, object]:
        """The form written outside Postgres (one JSON line per checkpoint)."""
        record: dict[str, object] = {
            "head_id": self.head.head_id,
            "head_hash": self.head.head_hash.hex(),
            "row_count": self.head.row_count,
            "at": self.head.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "key_name": self.key_name,
            "signature": self.signature,
        }
        if self.head.erasures is not None:
            # Named to sort after `head_id`: a line cut short before it still claims a checkpoint (exported_copy.py).
            record["rows_erase_count"] = self.head.erasures.count
            record["rows_erase_digest"] = self.head.erasures.digest.hex()
        if self.missing:
            record["rows_missing"] = list(self.missing)
            record["rows_missing_signature"] = self.missing_signature
        return record

    @classmethod
    def from_exported(cls, data: dict[str, object]) -> Checkpoint:
        """The inverse of `exported`."""
        erasures = (
            EraseCommitment(int(str(data["rows_erase_count"])), bytes.fromhex(str(data["rows_erase_digest"])))
            if "rows_erase_count" in data
            else None
        )
        head = ChainHead(
            int(str(data["head_id"])),
            bytes.fromhex(str(data["head_hash"])),
            int(str(data["row_count"])),
            datetime.fromisoformat(str(data["at"])),
            erasures,
        )
        missing = data.get("rows_missing") or []
        return cls(
            head,
            str(data["key_name"]),
            str(data["signature"]),
            tuple(int(str(i)) for i in missing) if isinstance(missing, list) else (),
            str(data.get("rows_missing_signature", "")),
        )


@dataclass(frozen=True)
class Finding:
    """Why the log cannot be trusted, and the first row concerned (None: no row to point at)."""

    first_row: int | None
    reason: str


SignatureCheck = Callable[[bytes, str], bool]
"""(message, signature) -> whether the signature is valid under the checkpoint key."""


def verify_log(
    records: Iterable[AuditRecord],
    checkpoints: Sequence[Checkpoint],
    exported: Sequence[Checkpoint],
    signature_valid: SignatureCheck,
) -> Finding | None:
    """What is wrong with the log, or None when everything holds (`LogWalk` over `records`).

    Checks the chain, then every checkpoint, the database's and the exported copy's alike, in
    the order of the rows they vouch for: its signature, the row at its head (that hash, and
    exactly `row_count` rows up to it), and that the database still holds the newest exported
    one as exported. Checking the older exported checkpoints too matters: the service goes on
    signing whatever chain it finds, so after a rewrite (checkpoints deleted, hashes recomputed)
    only the checkpoints signed before it still contradict the rows.
    """
    walk = LogWalk(checkpoints, exported, signature_valid)
    for record in records:
        walk.add(record)
    return walk.finding()


class LogWalk:
    """`verify_log` one record at a time, in id order: a log of any length in memory bounded by its checkpoints.

    The chain is checked as the records come (`ChainWalk`); of the records only what the
    checkpoints ask about is kept: the position and hash of each row at a checkpoint's head, and
    the id of the first row after each head (where a finding starts). `finding()` then checks
    every checkpoint as `verify_log` always did. An exported checkpoint identical to the
    database's copy is the same evidence (checked once).
    """

    def __init__(
        self, checkpoints: Sequence[Checkpoint], exported: Sequence[Checkpoint], signature_valid: SignatureCheck
    ) -> None:
        self._checkpoints = checkpoints
        self._exported = exported
        self._signature_valid = signature_valid
        self._chain = ChainWalk()
        self._broken: Finding | None = None
        heads = {c.head.head_id for c in checkpoints} | {c.head.head_id for c in exported}
        self._heads = heads
        self._waiting = sorted(heads | {0})  # ids whose first row after them is not read yet
        self._next = 0
        self._at_head: dict[int, tuple[int, bytes]] = {}
        self._erasures = NO_ERASE_ROWS  # the erase rows read so far (A46-3)
        self._erasures_at: dict[int, EraseCommitment] = {}
        self._first_after: dict[int, int] = {}
        self._anchored = checkpoints[-1].head.head_id if checkpoints else 0
        self.rows = 0
        """Records read so far."""
        self.unanchored = 0
        """Records read newer than the database's last checkpoint (`unanchored_rows`)."""

    def add(self, record: AuditRecord) -> None:
        """The next record of the log (in id order)."""
        self.rows += 1
        record_id = record.record_id
        if record_id > self._anchored:
            self.unanchored += 1
        waiting = self._waiting
        while self._next < len(waiting) and waiting[self._next] < record_id:
            self._first_after[waiting[self._next]] = record_id
            self._next += 1
        if record.event.action == ERASE_ACTION:
            self._erasures = self._erasures.after(record_id, record.row_hash)
        if record_id in self._heads:
            self._at_head[record_id] = (self.rows, record.row_hash)
            self._erasures_at[record_id] = self._erasures
        if self._broken is None:
            problem = self._chain.problem(record)
            if problem is not None:
                self._broken = Finding(record_id, problem)

    @property
    def broken(self) -> bool:
        """Whether the chain broke already: the walk's finding is that break, whatever comes after."""
        return self._broken is not None

    def finding(self) -> Finding | None:
        """What is wrong with the records added, set against the checkpoints (None: everything holds)."""
        if self._broken is not None:
            return self._broken
        signature_valid, checkpoints = self._signature_valid, self._checkpoints
        missing = _rows_missing(self._exported, signature_valid)
        if missing is not None:
            return missing
        exported = [c.anchor() for c in self._exported]
        stored = {c.head.head_id: c for c in checkpoints}
        newest_stored = checkpoints[-1].head.head_id if checkpoints else 0
        only_exported = {(c.head.head_id, c.signature): c for c in exported if stored.get(c.head.head_id) != c}
        evidence = [(c.head.head_id, False, c) for c in checkpoints]
        evidence += [(c.head.head_id, True, c) for c in only_exported.values()]
        anchored_to = 0  # id of the newest row a valid checkpoint vouches for
        for head_id, from_copy, checkpoint in sorted(evidence, key=lambda e: (e[0], e[1])):
            problem = _contradiction(checkpoint, self._at_head, signature_valid, self._erasures_at)
            if from_copy:
                problem = _against_the_database(checkpoint, stored.get(head_id), newest_stored, problem)
            if problem is not None:
                return Finding(self._first_after.get(anchored_to), problem)
            anchored_to = max(anchored_to, head_id)
        return None


def _rows_missing(exported: Sequence[Checkpoint], signature_valid: SignatureCheck) -> Finding | None:
    """The first exported checkpoint naming rows its service appended that the chain did not hold (None: none).

    A note whose signature does not hold is a finding too: only the signing key makes one.
    """
    for checkpoint in sorted((c for c in exported if c.missing), key=lambda c: c.head.head_id):
        ids = ", ".join(str(i) for i in checkpoint.missing)
        if not signature_valid(checkpoint.missing_message(), checkpoint.missing_signature):
            return Finding(
                checkpoint.missing[0],
                f"the exported checkpoint at row {checkpoint.head.head_id} names missing rows ({ids})"
                " under a bad signature",
            )
        return Finding(
            checkpoint.missing[0],
            f"audit rows {ids}, appended by the vault service, are missing from the chain up to row"
            f" {checkpoint.head.head_id} ({_when(checkpoint.head)}): written elsewhere than vault.audit_log"
            " (a view, rule or trigger diverting them), changed or removed; the calls were audited nowhere",
        )
    return None


def _contradiction(
    checkpoint: Checkpoint,
    at_head: Mapping[int, tuple[int, bytes]],
    signature_valid: SignatureCheck,
    erasures_at: Mapping[int, EraseCommitment],
) -> str | None:
    """Why `checkpoint` does not vouch for the rows (None: it does).

    A v2 checkpoint also commits to the erase rows up to its head (A46-3): rows read there that are not those it
    names are a finding of their own, named beside a head that no longer matches.
    """
    head = checkpoint.head
    if not signature_valid(head.message(), checkpoint.signature):
        return f"checkpoint at row {head.head_id} has a bad signature"
    found = at_head.get(head.head_id)  # (its position in the log, its hash)
    erasures = None
    if head.erasures is not None and head.head_id in erasures_at:  # the head's row read: what came up to it
        erasures = head.erasures.differs(erasures_at[head.head_id], head.head_id)
    if found is None or found[1] != head.head_hash or found[0] != head.row_count:
        return (
            f"rows up to {head.head_id} no longer match the signed checkpoint of {_when(head)}"
            " (rewritten, recomputed, inserted or deleted)" + (f"; {erasures}" if erasures else "")
        )
    return erasures


def _against_the_database(
    copy: Checkpoint, stored: Checkpoint | None, newest_stored: int, problem: str | None
) -> str | None:
    """Why an exported checkpoint that the database does not hold as exported is a finding (None: it is not).

    One the database holds a different checkpoint of is evidence like any other: genuine and
    matching the rows (`problem` None), it proves them; two replicas that checked the same head
    each sign and export it when one stores its checkpoint between the other's reads (98d6e6d),
    and the database keeps one (a false "differs" in CI, 4 December). One it lacks is a finding
    when the rows contradict it, or when it is newer than every stored checkpoint (the newest rows
    and their checkpoints deleted). An older one it lacks that still matches the rows proves them:
    the service exports without storing while the database's checkpoints are impossible (see
    audit_upkeep).
    """
    head = copy.head
    if stored is not None:
        return problem
    if problem is None and head.head_id <= newest_stored:
        return None
    return (
        f"the exported copy holds a checkpoint at row {head.head_id} ({_when(head)}) that the database no longer"
        f" has: rows or checkpoints were deleted{'; ' + problem if problem else ''}"
    )


def unanchored_rows(records: Sequence[AuditRecord], checkpoints: Sequence[Checkpoint]) -> int:
    """How many rows are newer than the last checkpoint (not yet anchored)."""
    last = checkpoints[-1].head.head_id if checkpoints else 0
    return sum(1 for r in records if r.record_id > last)


def _when(head: ChainHead) -> str:
    return head.at.astimezone(UTC).isoformat(timespec="seconds")
