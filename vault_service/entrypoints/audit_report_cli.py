"""The security team's audit reports: `audit-verify` and `who-saw` (`python -m vault_service.admin`).

Both only read: the chain, the signed checkpoints and the exported copy are verified, the erasures
reconciled with the erase rows and the audit keys checked, and `who-saw` answers from the records
that verification read (one read of the log). Moved out of admin_cli.py (review 18, R18-9).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from vault_service.bootstrap import Bootstrapped, bootstrap
from vault_service.config import VaultServiceConfig
from vault_service.entrypoints.audit_report_lines import WHO_SAW_COLUMNS, verdict_lines, who_saw_cells, who_saw_summary
from vault_service.service.audit_verify import COPY_LAG_INTERVALS, FullAuditReport, token_hashes, who_saw
from vault_service.service.exported_copy import read_exported_copy

console = Console(stderr=False)


def _verified(
    wired: Bootstrapped, own: Path | None, given: Path | None, max_copy_lag: float, keep: frozenset[bytes]
) -> FullAuditReport:
    """Verify the log and the erasures against it, and say so; the report holds the records of `keep`'s tokens.

    `own`: the vault's exported copy (TOKENVAULT_AUDIT_CHECKPOINT_FILE, None: none configured);
    `given`: the copy named by --exported. A copy given is read TOGETHER with the vault's own, as
    AuditReports reads a copy sent with a call (one verifier, `verify_audit`'s `sent`): it only adds
    evidence. Read instead of the vault's own, a stale copy passed a log whose newest rows and
    checkpoint the database's owner had deleted (attack 28, F5, in the service account's command).
    The report names both copies. The log is streamed through the verification (the vault's own
    reports share it): its length costs time, not memory.
    """
    sent = None
    if given is not None and not _same_file(given, own):
        sent = read_exported_copy(given)
        if own is not None and not own.exists():
            raise FileNotFoundError(
                f"no exported checkpoints at {own} (TOKENVAULT_AUDIT_CHECKPOINT_FILE): the vault's own copy is read"
                f" together with the copy given ({given}), which may only add to it; check the file where the vault"
                " runs, or set TOKENVAULT_AUDIT_CHECKPOINT_FILE empty to verify against the copy given alone"
            )
    report = wired.verify_audit_fully(own, max_copy_lag, keep, sent)
    for line in verdict_lines(report, copy_given=own is not None or sent is not None):
        console.print(line)
    return report


def _same_file(given: Path, own: Path | None) -> bool:
    """Whether the copy given is the vault's own file (read once, not twice)."""
    if own is None:
        return False
    try:
        return given.samefile(own)
    except OSError:
        return given.resolve() == own.resolve()


def _copy_lag(config: VaultServiceConfig, max_copy_lag: float | None) -> float:
    """Seconds the exported copy may be behind the database's checkpoints: given, or COPY_LAG_INTERVALS intervals."""
    return max_copy_lag if max_copy_lag is not None else COPY_LAG_INTERVALS * config.audit_checkpoint_seconds


def audit_verify(config: VaultServiceConfig, exported: Path | None, max_copy_lag: float | None = None) -> int:
    """Check the audit log; 0 when intact, 1 naming the first record concerned (or the exported copy too old)."""
    wired = bootstrap(config, report=True)  # reads past a policy to name it
    try:
        report = _verified(wired, config.audit_checkpoint_file, exported, _copy_lag(config, max_copy_lag), frozenset())
        return 0 if report.intact else 1
    finally:
        wired.close()


def audit_who_saw(
    config: VaultServiceConfig, token: str, exported: Path | None, max_copy_lag: float | None = None
) -> int:
    """Print every reveal and erasure of `token` once the log verifies; 1 when it does not.

    The answer is filtered from the records the verification itself read and verified: one
    read of the log, no second query the database could answer differently.
    """
    wired = bootstrap(config, report=True)  # reads past a policy to name it
    try:
        audit_keys = wired.keys.ring.audit_keys
        keep = token_hashes(audit_keys, token)
        report = _verified(wired, config.audit_checkpoint_file, exported, _copy_lag(config, max_copy_lag), keep)
        if not report.verified:
            return 1
        records = who_saw(report, audit_keys, token)
        after = frozenset(report.reveals_after_erasure)
        table = Table(*WHO_SAW_COLUMNS)
        for record in records:  # every row listed is a Detokenize's, an Erase's or a WhoSaw's
            table.add_row(*who_saw_cells(record, record.record_id in after))
        console.print(table)
        console.print(who_saw_summary([r.event.action for r in records]))
        return 0 if report.intact else 1  # a reveal after an erasure: listed, marked, and not intact
    finally:
        wired.close()
