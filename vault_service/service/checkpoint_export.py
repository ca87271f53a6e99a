"""Checkpoints and notes of pending rows, exported outside the database: log lines, and lines of the checkpoint file.

`CheckpointAnchor` (checkpoint_anchor.py) exports each checkpoint it signs or finds genuine
through `checkpoint_exporter`; the audit upkeep notes the rows appended and not yet anchored
through `pending_exporter` before each round (retest 17, finding A). Both loggers log at INFO
whatever level the service logs at: the lines are evidence.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.pending_rows import PendingNote

log = logging.getLogger(__name__)

export_log = logging.getLogger("vault_service.audit_checkpoints")
"""The exported checkpoints' log lines: evidence, not chatter, so at INFO whatever level the service logs at.

Under TOKENVAULT_LOG_LEVEL=WARNING the checkpoints' INFO lines were dropped while the upkeep
counted them exported and forgot the rows they anchor; the Kubernetes deployment sets no
checkpoint file, so nothing left the database (review 18, R18-3). The level set here holds
whatever the root logger's is: logging checks only the emitting logger's effective level.
"""
export_log.setLevel(logging.INFO)
pending_log = logging.getLogger("vault_service.audit_pending")
"""The notes of rows appended and not yet anchored (retest 17, finding A): evidence too, so at INFO as `export_log`."""
pending_log.setLevel(logging.INFO)


def checkpoint_exporter(path: Path | None, create: bool = True) -> Callable[[Checkpoint], None]:
    """Exports each checkpoint as a JSON log line and, with `path`, appends it to that file.

    `create` False: a file that does not exist is not created, only logged. The admin commands
    run as the operator's OS user; a file they created belonged to that user, the vault could no
    longer append to it and, its rounds failing, refused every reveal a minute later (retest 17,
    finding B). A file this user may not write (the vault's own, mode 0600) is skipped the same
    way (review 19, R19-9): the command would otherwise refuse its work for want of an export the
    vault's log gives (it exports every genuine checkpoint it finds, R19-2). Their checkpoint is
    in the database and their log all the same.
    """

    def export(checkpoint: Checkpoint) -> None:
        record = checkpoint.exported()
        export_log.info("audit checkpoint", extra={"audit_checkpoint": record})
        if path is None:
            return
        left_alone = _appended_line(path, json.dumps(record, sort_keys=True), create)
        if left_alone is not None:
            log.warning(
                "the audit checkpoint file %s %s: this command does not create it or take it over (the vault"
                " service writes it, as its own user); its checkpoint is in the database and the line above",
                path,
                left_alone,
            )

    return export


def _appended_line(path: Path, line: str, create: bool) -> str | None:
    """Append `line` to the file at `path`; why it was left alone (`create` False: missing, not writable), or None.

    With `create`, a file that cannot be opened raises: the vault's own export must fail loudly.
    The line is appended whole or not at all (`_append_whole`).
    """
    flags = os.O_APPEND | (os.O_CREAT if create else 0)
    try:
        try:
            descriptor = os.open(path, flags | os.O_RDWR, 0o666)  # the umask applies, as for open(path, "a")
        except PermissionError:  # a file this user may write and not read: appended to without the newline check
            descriptor = os.open(path, flags | os.O_WRONLY, 0o666)
    except (FileNotFoundError, PermissionError) as error:
        if create:
            raise
        return "does not exist" if isinstance(error, FileNotFoundError) else "is not writable by this user"
    try:
        _append_whole(descriptor, (line + "\n").encode("utf-8"))
    finally:
        os.close(descriptor)
    return None


def _append_whole(descriptor: int, data: bytes) -> None:
    """Append `data` (one line and its newline) as a line of its own, or leave the file as it was (chaos 50, V50-1).

    A write the disk cannot take (ENOSPC, EFBIG, EIO) may store part of the line first: left there,
    with no newline, it was a checkpoint line cut short, and the next line was appended onto it - the
    copy reader refuses a copy holding a line that claims a checkpoint and cannot be read, so every
    `audit verify` and `who-saw` was refused from then on and the glued checkpoint was lost. So the
    file is cut back to its size before the write when the write fails, and a line that a crash of
    the host did cut short (the file's last byte not a newline) is ended first, so that this line
    stands alone. Writers (the vault, the admin commands) take the file's lock around it, so the
    size read before is where this line starts. A lock held longer than any append takes is not a writer's
    (`_locked`): the line is appended without it.
    """
    _locked(descriptor)
    before = os.fstat(descriptor).st_size
    with contextlib.suppress(OSError):  # a write-only descriptor: no check
        if before and os.pread(descriptor, 1, before - 1) != b"\n":
            data = b"\n" + data
    written = 0
    try:
        while written < len(data):
            written += os.write(descriptor, data[written:])
    except OSError:
        if written:
            try:
                os.ftruncate(descriptor, before)
            except OSError:  # what the failed write left stays: the next append ends its line first
                log.warning("the audit checkpoint file could not be cut back after a failed write", exc_info=True)
        raise


LOCK_WAIT_SECONDS = 2.0
"""The longest an append waits for the checkpoint file's lock: the writers hold it for one write of one line."""


def _locked(descriptor: int, wait: float = LOCK_WAIT_SECONDS) -> bool:
    """Take the file's exclusive lock, waiting at most `wait` seconds; whether it was taken (review 50, R50-1).

    `flock` needs only a descriptor of the file, so anyone who may read it - a log shipper, a person reading
    the evidence - could hold its lock: waited for without a bound, the vault's audit upkeep hung at its
    next append, no checkpoint was exported, and every reveal was refused after the audit bound for as long
    as the lock was held. The writers hold it for one write, so past `wait` it is no writer's. A file system
    that has no locks (NFS mounted `nolock`, FUSE: ENOLCK, EOPNOTSUPP) is appended to without one, as before
    V50-1 - refused, every append failed and reveals stopped after the audit bound (review 50, R50-4).
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                log.warning(
                    "the audit checkpoint file has been locked by another process for over %.0f s (flock; the"
                    " vault's writers hold it for one line): appended without the lock - find the process holding"
                    " it (lsof, /proc/locks)",
                    wait,
                )
                return False
            time.sleep(0.02)
        except OSError as error:  # no locks on this file system
            if not _unlockable_told:
                _unlockable_told.append(error.errno)
                log.warning("the audit checkpoint file cannot be locked (%s): appended without the lock", error)
            return False


_unlockable_told: list[int | None] = []
"""Whether the file system's refusal to lock was logged (once per process)."""


def pending_exporter(path: Path | None, create: bool = True) -> Callable[[PendingNote], None]:
    """Exports each note of rows not yet anchored as a JSON log line `audit_pending` and, with `path`, a file line.

    The line `{"audit_pending": ...}` is appended to the checkpoint file (domain/pending_rows.py).
    `create` False (the admin commands'): a file missing or not writable is left alone, as by
    `checkpoint_exporter`, and the log line is the copy.
    """

    def export(note: PendingNote) -> None:
        record = note.exported()
        pending_log.info("audit rows pending", extra={"audit_pending": record})
        if path is None:
            return
        _appended_line(path, json.dumps({"audit_pending": record}, sort_keys=True), create)

    return export
