"""`audit verify` and `who saw`: what the audit trail proves, read back from the database.

Verification needs no Vault: checkpoint signatures are checked offline against the signing
key's public keys, and the exported copy of the checkpoints is read from where it was shipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vault_service.domain.audit import AuditRecord
from vault_service.domain.checkpoints import Checkpoint, Finding, unanchored_rows, verify_log
from vault_service.domain.crypto import DataKey
from vault_service.service.audit_upkeep import read_exported
from vault_service.service.revealing import reveal_hash


class AuditReader(Protocol):
    """What verification reads from the audit store."""

    def records(self, after_id: int = 0) -> list[AuditRecord]:
        """Every record after `after_id`, in order."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        ...

    def revealing(self, token_hashes: list[bytes]) -> list[AuditRecord]:
        """Records whose reveals include any of `token_hashes`."""
        ...


class SignatureCheck(Protocol):
    """Offline verification of a Transit signature with the key's public keys."""

    def __call__(self, public_keys: Mapping[int, str], data: bytes, signature: str) -> bool:
        """Whether `signature` is valid for `data`."""
        ...


@dataclass(frozen=True)
class AuditReport:
    """The outcome of a verification."""

    rows: int
    checkpoints: int
    unanchored: int
    finding: Finding | None

    @property
    def intact(self) -> bool:
        """True when nothing was found."""
        return self.finding is None


def verify_audit(
    store: AuditReader, public_keys: Mapping[int, str], check: SignatureCheck, exported: Path | None
) -> AuditReport:
    """Verify the chain, every checkpoint in the database and, with `exported`, every exported one.

    The service may append and checkpoint while this reads, so the reads go from the newest
    evidence back: the exported copy, then the database's checkpoints, then the rows. A checkpoint
    is exported only once stored (or, beside a planted checkpoint, instead of being stored), and
    made only once its rows are committed, so every checkpoint read vouches for rows the later
    read sees. Read the other way round, a checkpoint made in between named rows the earlier read
    missed: a false "TAMPERED".
    """
    copies = read_exported(exported) if exported is not None else []
    checkpoints = store.checkpoints()
    records = store.records()
    finding = verify_log(records, checkpoints, copies, lambda data, signature: check(public_keys, data, signature))
    return AuditReport(len(records), len(checkpoints), unanchored_rows(records, checkpoints), finding)


def who_saw(store: AuditReader, audit_keys: list[DataKey], token: str) -> list[AuditRecord]:
    """Every audited reveal of `token` (by any client), oldest first; verify the log before trusting it."""
    return store.revealing([reveal_hash(key, token) for key in audit_keys])
