"""The exported copy of the audit checkpoints, as audit-verify reads it, and what it covers (attack 17, finding 5).

The copy is what catches a database owner who deletes the newest rows together with their
checkpoints, so verification must know what it read from it, and refuse what proves nothing:
`audit verify --exported COPY` said "the exported copy verified" having read no checkpoint from
an empty copy or from one whose lines a log shipper had wrapped, and deleted rows passed.

Accepted, line by line (one JSON object a line; the copy may mix them):
- the checkpoint file's lines (`TOKENVAULT_AUDIT_CHECKPOINT_FILE`): the checkpoint itself;
- the vault's JSON log: its `audit checkpoint` lines carry one under `audit_checkpoint`, other
  lines are skipped;
- either of those wrapped by a log shipper: a field `log` or `message` holding the line, as a
  string (Docker's json-file driver, Fluent Bit and Fluentd, Vector) or already parsed;
- either of those as the kubelet stores a container's output (the CRI log format of containerd
  and CRI-O, /var/log/pods/...: `<time> stdout F <line>`, a line longer than the runtime's
  buffer split into `P` parts joined here): the shipped Kubernetes deployment exports its
  checkpoints only as the vault's log lines, so a copy taken from the node is in this form.
A line whose structure claims a checkpoint - a key `head_id` or `audit_checkpoint`, or such a
key as JSON text in one of its strings - but that yields none in these forms (cut short, another
wrapper, a field changed) refuses the whole copy
(`UnreadableExportedCopy`): skipped, it would leave checkpoints unread and the copy would
vouch for less than it seems to.

Beside the checkpoints, the notes of the rows a replica appended and had not anchored yet
(`{"audit_pending": {...}}`, domain/pending_rows.py; retest 17, finding A) are read from the same
lines, in the same forms; one that claims to be a note and cannot be read refuses the copy too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import cast

from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.pending_rows import PendingNote

WRAPPER_FIELDS = ("log", "message")
"""Where a log shipper puts the original line (Docker json-file, Fluent Bit/Fluentd: `log`; Vector: `message`)."""
_MAX_WRAPPING = 3
"""Wrappers unwrapped at most (a shipper forwarding another's output adds one each)."""
_CHECKPOINT_KEYS = frozenset({"head_id", "audit_checkpoint"})
"""The keys only a record carrying a checkpoint has."""
_CLAIMS_A_CHECKPOINT = re.compile(r'(?<!\\)"(?:head_id|audit_checkpoint)"\s*:')
"""A checkpoint's key as JSON text writes it (not inside a JSON string, where its quotes are escaped).

Lines are told by their structure, not by a word in them: the database owner controls text the
vault logs (a role default's name, `x.head_id`, is logged at start), and a line merely holding
`head_id` refused every copy of the vault's log (retest 17, finding C)."""
_PENDING_KEY = "audit_pending"
_CLAIMS_A_NOTE = re.compile(r'(?<!\\)"audit_pending"\s*:')
"""A pending-rows note's key as JSON text writes it (as `_CLAIMS_A_CHECKPOINT`)."""

_CRI_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\S+) (?P<stream>stdout|stderr) (?P<tag>[PF])(?::\S*)? (?P<text>.*)", re.S
)
"""A line of the CRI log format (kubelet, containerd, CRI-O): time, stream, P(artial)/F(ull) tag, the text."""

ACCEPTED_FORMAT = (
    "the checkpoint file's lines (one JSON object a line), the vault's JSON log lines (`audit_checkpoint`),"
    " either wrapped by a log shipper in a field `log` or `message` (Docker json-file, Fluent Bit, Vector),"
    " or as the kubelet stores them (CRI log format: `<time> stdout F <line>`)"
)


class ExportedCopyRefused(ValueError):
    """The exported copy given cannot be verified against: nothing is reported as verified."""


class NoExportedCheckpoints(ExportedCopyRefused):
    """The exported copy given holds no checkpoint while the database holds some: nothing to verify against.

    A wrong file, a log of another process or an emptied copy would otherwise pass as "the
    exported copy verified", proving nothing against the deletion it is there to catch.
    """

    def __init__(self, exported: Path, stored: int) -> None:
        self.path = exported
        super().__init__(
            f"{exported} holds no exported checkpoint, while the database holds {stored}: it is not the copy"
            " of the checkpoints the vault exports (TOKENVAULT_AUDIT_CHECKPOINT_FILE, or the vault's log with"
            f" its `audit checkpoint` lines), or it was emptied; nothing was verified against it. Accepted:"
            f" {ACCEPTED_FORMAT}"
        )


class UnreadableExportedCopy(ExportedCopyRefused):
    """The exported copy holds lines that look like checkpoints but cannot be read as one."""

    def __init__(self, exported: Path, lines: Sequence[int]) -> None:
        self.path = exported
        shown = ", ".join(str(n) for n in lines[:10]) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")
        super().__init__(
            f"{exported}: {len(lines)} line(s) look like exported checkpoints but cannot be read as one (line"
            f" {shown}): cut short, changed, or in a format not accepted; nothing was verified against the copy."
            f" Accepted: {ACCEPTED_FORMAT}"
        )


@dataclass(frozen=True)
class ExportedCopy:
    """What was read from an exported copy: its checkpoints, in file order."""

    path: Path
    checkpoints: tuple[Checkpoint, ...]
    wrapped: int
    """How many of them came from lines a log shipper had wrapped."""
    pending: tuple[PendingNote, ...] = ()
    """The notes of rows a replica appended and had not anchored yet (domain/pending_rows.py), in file order."""

    @property
    def newest(self) -> Checkpoint | None:
        """The checkpoint of the highest head in the copy (None when it holds none)."""
        return max(self.checkpoints, key=lambda c: c.head.head_id, default=None)

    def summary(self) -> str:
        """What was read, for the report: 'N exported checkpoint(s) read from PATH, newest at row X (time)'."""
        newest = self.newest
        read = f"{len(self.checkpoints)} exported checkpoint(s) read from {self.path}"
        if newest is None:
            return read
        at = newest.head.at.astimezone(UTC).isoformat(timespec="seconds")
        wrapped = f"; {self.wrapped} from log-shipper wrapped lines" if self.wrapped else ""
        return f"{read}, newest at row {newest.head.head_id} ({at}){wrapped}"


def read_exported_copy(path: Path, named: Path | None = None) -> ExportedCopy:
    """The checkpoints exported to `path` (see the module's doc for the accepted lines), named `named` (None: `path`).

    FileNotFoundError for a missing file (verifying against nothing would prove nothing);
    UnreadableExportedCopy naming the lines that look like checkpoints but cannot be read.
    The vault names its own copy VAULTS_COPY to a report's caller: its path is not theirs to know (attack 28, F6).
    """
    if not path.exists():
        raise FileNotFoundError(f"no exported checkpoints at {path}")
    with path.open(encoding="utf-8", errors="replace") as lines:
        return exported_copy_of(lines, named or path)


VAULTS_COPY = Path("the vault's exported checkpoint copy")
"""How the vault's own copy file is named in what a report for a gRPC caller reads and refuses (not its path)."""


def together(first: ExportedCopy, second: ExportedCopy) -> ExportedCopy:
    """Both copies' checkpoints and notes as one copy, named by both: a copy sent only adds evidence (attack 28, F5)."""
    return ExportedCopy(
        Path(f"{first.path} and {second.path}"),
        first.checkpoints + second.checkpoints,
        first.wrapped + second.wrapped,
        first.pending + second.pending,
    )


SENT_COPY = Path("the-copy-sent-with-the-call")
"""How a copy a caller sent with its call (AuditReports' Verify) is named in what it reads and refuses."""
MAX_SENT_COPY_BYTES = 8 * 1024 * 1024
"""The largest copy a call may carry: the newest hours of a shipped log's checkpoint lines (~400 bytes each,
one a checkpoint interval per replica), well within a request's MAX_REQUEST_BYTES."""


def sent_exported_copy(text: bytes) -> ExportedCopy:
    """The checkpoints in a copy sent with a call (as `read_exported_copy` reads a file; invalid UTF-8 replaced)."""
    return exported_copy_of(text.decode("utf-8", errors="replace").splitlines(keepends=True), SENT_COPY)


def exported_copy_of(lines: Iterable[str], path: Path) -> ExportedCopy:
    """The checkpoints of a copy's `lines`, read from `path` (how it is named); see `read_exported_copy`."""
    checkpoints: list[Checkpoint] = []
    pending: list[PendingNote] = []
    unreadable: list[int] = []
    wrapped = 0
    for number, line, from_cri in _cri_joined(lines):
        note = _note_of(line) if _PENDING_KEY in line else None
        if isinstance(note, PendingNote):
            pending.append(note)
            continue
        if note is _UNREADABLE:
            unreadable.append(number)
            continue
        found = _checkpoint_of(line)
        if found is _UNREADABLE:
            unreadable.append(number)
        if not isinstance(found, tuple):
            continue
        checkpoint, was_wrapped = found
        checkpoints.append(checkpoint)
        wrapped += was_wrapped or from_cri
    if unreadable:
        raise UnreadableExportedCopy(path, unreadable)
    return ExportedCopy(path, tuple(checkpoints), wrapped, tuple(pending))


def _cri_joined(lines: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    """Each line of `lines` with its number and whether it came in the CRI log format, its `P` parts joined.

    A CRI line gives its text (after time, stream and tag); the parts of one stream's split line
    are joined up to its `F` part and numbered by that part's line. Other lines are given as they
    are. Parts never ended (the copy cut short) are given as they were joined, so that a cut
    checkpoint refuses the copy rather than being skipped.
    """
    parts: dict[str, tuple[int, list[str]]] = {}
    for number, line in enumerate(lines, start=1):
        cri = _CRI_LINE.fullmatch(line.rstrip("\n"))
        if cri is None:
            yield number, line, False
            continue
        first, texts = parts.pop(cri["stream"], (number, []))
        texts.append(cri["text"])
        if cri["tag"] == "P":
            parts[cri["stream"]] = (first, texts)
        else:
            yield number, "".join(texts), True
    for first, texts in parts.values():
        yield first, "".join(texts), True


class _Unreadable:
    """A line that claims a checkpoint (its keys, see `_claims_a_checkpoint`) that cannot be read as one."""


_UNREADABLE = _Unreadable()
MAX_LINE_CHARS = 16 * 1024 * 1024
"""The longest line parsed: a pending-rows note of MAX_NOTED_ROWS runs at worst (a checkpoint's is ~400 bytes)."""
MAX_BRACKETS = 64
"""The most `[` and `{` a line parsed may hold (so its nesting is at most that): a checkpoint's, wrapped, has under
ten. A deeper line made json raise RecursionError, which no refusal caught (attack 28, F1)."""
_KEY_WORDS = ("head_id", "audit_checkpoint", _PENDING_KEY)
_MALFORMED = (ValueError, RecursionError, OverflowError, KeyError, TypeError)
"""What reading a line may raise (json, `fromisoformat`, a time at `datetime`'s edge): the line is unreadable."""


def _parsed(text: str) -> object:
    """`text` as JSON; ValueError when it is longer or more nested than any line the vault writes (never parsed)."""
    if len(text) > MAX_LINE_CHARS or text.count("[") + text.count("{") > MAX_BRACKETS:
        raise ValueError("longer or more nested than any exported line")
    return json.loads(text)


def _claims_any(text: str) -> bool:
    """Whether `text` names a checkpoint's or a note's key anywhere (escaped or not): a line not parsed is judged so."""
    return any(word in text for word in _KEY_WORDS)


_MAX_DEPTH = 6
"""How deep a record's values are searched for a checkpoint's keys (wrappers and their fields)."""


def _checkpoint_of(line: str) -> tuple[Checkpoint, bool] | _Unreadable | None:
    """The checkpoint one line carries and whether a shipper had wrapped it.

    _UNREADABLE when the line claims one it does not yield in an accepted form (cut short, a
    wrapper not accepted, a field changed); None when it claims none.
    """
    record: object = line
    for depth in range(_MAX_WRAPPING + 1):
        if isinstance(record, str):
            text = record
            try:
                record = _parsed(text)
            except _MALFORMED:
                return _UNREADABLE if _CLAIMS_A_CHECKPOINT.search(text) or _too_big(text) else None
        if not isinstance(record, dict):
            return _UNREADABLE if _claims_a_checkpoint(record) else None
        fields = cast(dict[str, object], record)
        if "audit_checkpoint" in fields:
            inner_checkpoint = fields["audit_checkpoint"]
            if not isinstance(inner_checkpoint, dict):
                return _UNREADABLE
            fields = cast(dict[str, object], inner_checkpoint)
        if "head_id" in fields:
            try:
                checkpoint = Checkpoint.from_exported(fields)
                checkpoint.head.message()  # its time within `datetime`'s range in UTC too (OverflowError)
            except _MALFORMED:
                return _UNREADABLE
            return checkpoint, depth > 0
        wrapped = next((fields[f] for f in WRAPPER_FIELDS if isinstance(fields.get(f), str | dict)), None)
        if wrapped is None:
            return _UNREADABLE if _claims_a_checkpoint(fields) else None
        record = wrapped
    return _UNREADABLE if _claims_a_checkpoint(record) else None


def _note_of(line: str) -> PendingNote | _Unreadable | None:
    """The pending-rows note one line carries, as `_checkpoint_of` reads a checkpoint (the same wrappers).

    _UNREADABLE when the line claims one (its key as JSON text) it does not yield; None otherwise.
    """
    record: object = line
    for _ in range(_MAX_WRAPPING + 1):
        if isinstance(record, str):
            text = record
            try:
                record = _parsed(text)
            except _MALFORMED:
                return _UNREADABLE if _CLAIMS_A_NOTE.search(text) or _too_big(text) else None
        if not isinstance(record, dict):
            return None
        fields = cast(dict[str, object], record)
        if _PENDING_KEY in fields:
            try:
                return PendingNote.from_exported(fields[_PENDING_KEY])
            except _MALFORMED:
                return _UNREADABLE
        record = next((fields[f] for f in WRAPPER_FIELDS if isinstance(fields.get(f), str | dict)), None)
        if record is None:
            return None
    return None


def _too_big(text: str) -> bool:
    """Whether `text`, not parsed for its length or nesting, is JSON or names a key of the copy: it may hide one.

    Such a line refuses the copy (naming its number, never its text); a line of other text is skipped.
    """
    too_big = len(text) > MAX_LINE_CHARS or text.count("[") + text.count("{") > MAX_BRACKETS
    return too_big and (text.lstrip()[:1] in ("{", "[") or _claims_any(text))


def _claims_a_checkpoint(value: object, depth: int = 0) -> bool:
    """Whether a parsed record holds a checkpoint's key, or a string holding one as JSON text, anywhere within."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, str):
        return bool(_CLAIMS_A_CHECKPOINT.search(value))
    if isinstance(value, dict):
        return any(
            key in _CHECKPOINT_KEYS or _claims_a_checkpoint(item, depth + 1)
            for key, item in cast(dict[str, object], value).items()
        )
    if isinstance(value, list):
        return any(_claims_a_checkpoint(item, depth + 1) for item in cast(list[object], value))
    return False
