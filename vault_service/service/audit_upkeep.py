"""The audit trail's background upkeep: aggregated rows, and signed, exported checkpoints.

Every `interval` seconds (and once more at shutdown) it
1. writes the tokenize meter's per-client rows and the throttled refusals' counts;
2. if the chain has grown since the last checkpoint, signs its head with the Transit signing key
   (sign-only for the service), stores the checkpoint in vault.audit_checkpoints and exports it
   outside Postgres (a JSON log line, and a line in the checkpoint file when one is configured).
So only rows newer than the last checkpoint — at most `interval` seconds of them while the
service runs — are not anchored yet.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import VaultError
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0


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

    def last_checkpoint_head(self) -> int:
        """The head id of the newest checkpoint (0 when none)."""
        ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a checkpoint; False when another replica stored one for the same head."""
        ...


def checkpoint_exporter(path: Path | None) -> Callable[[Checkpoint], None]:
    """Exports each checkpoint as a JSON log line and, with `path`, appends it to that file."""

    def export(checkpoint: Checkpoint) -> None:
        record = checkpoint.exported()
        log.info("audit checkpoint", extra={"audit_checkpoint": record})
        if path is not None:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    return export


def read_exported(path: Path) -> list[Checkpoint]:
    """The checkpoints exported to `path`, in file order.

    Takes the checkpoint file (one JSON object per line) as well as the service's JSON log,
    whose `audit checkpoint` lines carry one each under `audit_checkpoint`; other lines are
    skipped. A missing file is an error: verifying against nothing would prove nothing.
    """
    if not path.exists():
        raise FileNotFoundError(f"no exported checkpoints at {path}")
    checkpoints = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("audit_checkpoint"), dict):
            record = record["audit_checkpoint"]
        if isinstance(record, dict) and "head_id" in record and "signature" in record:
            checkpoints.append(Checkpoint.from_exported(record))
    return checkpoints


class AuditUpkeep:
    """Flushes the aggregated audit rows and anchors the chain, on a timer thread."""

    def __init__(
        self,
        audit: AuditLog,
        store: CheckpointStore,
        signer: Signer,
        meter: TokenizeMeter,
        refusals: RefusalAuditor,
        export: Callable[[Checkpoint], None],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._audit = audit
        self._store = store
        self._signer = signer
        self._meter = meter
        self._refusals = refusals
        self._export = export
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counted: ChainHead | None = None  # the last head counted: the next count starts there

    def run_once(self) -> Checkpoint | None:
        """Write the aggregated rows, then checkpoint the chain if it grew; the checkpoint made."""
        for event in self._meter.flush() + self._refusals.flush():
            self._audit.append(event)
        head = self._store.head(self._counted)
        self._counted = head or self._counted
        if head is None or head.head_id <= self._store.last_checkpoint_head():
            return None
        checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        if not self._store.add_checkpoint(checkpoint):
            return None
        self._export(checkpoint)
        return checkpoint

    def start(self) -> None:
        """Run every `interval` seconds on a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self._loop, name="audit-upkeep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then flush and checkpoint one last time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._safely()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._safely()

    def _safely(self) -> None:
        try:
            self.run_once()
        except VaultError as error:  # Vault or the database away: the next round catches up
            log.warning("audit upkeep postponed: %s", error)
