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
from vault_service.domain.purpose import purpose_as_shown
from vault_service.service.audit_verify import COPY_LAG_INTERVALS, FullAuditReport, who_saw
from vault_service.service.erase_reconciliation import ErasureReconciliation

console = Console(stderr=False)


def _verified(wired: Bootstrapped, exported: Path | None, max_copy_lag: float) -> FullAuditReport:
    """Verify the log and the erasures against it, and say so; the report holds the records read."""
    report = wired.verify_audit_fully(exported, max_copy_lag)
    copy = report.copy
    if copy is not None:
        console.print(copy.read)
    where = f"; {report.unanchored} newest row(s) not checkpointed yet" if report.unanchored else ""
    if report.finding is not None:
        first = f"record id {report.finding.first_row}" if report.finding.first_row else "the newest records"
        console.print(
            f"audit log TAMPERED from {first}: {report.finding.reason}; records from there on cannot be trusted"
        )
    elif copy is not None and copy.too_old:
        console.print(
            f"hash chain and {report.checkpoints} signed checkpoint(s) hold for {report.rows} record(s), but the"
            f" exported copy is too old to verify the newest: {copy.gap()}, {copy.behind:.0f} s more than the"
            f" {copy.allowed:.0f} s allowed (--max-copy-lag). The database's owner can delete its newest rows"
            " with their checkpoints, which only the copy exposes"
        )
        console.print(
            "audit log NOT verified: verify against a fresher copy holding every replica's checkpoint lines (is"
            " the log shipper running?), or pass --max-copy-lag for a known shipping delay"
        )
    else:
        copied = "the exported copy" if exported else "no exported copy (pass --exported)"
        verdict = "audit log intact" if report.intact else "audit log chain intact"
        console.print(
            f"{verdict}: {report.rows} record(s), hash chain, {report.checkpoints} signed checkpoint(s)"
            f" and {copied} verified{where}"
        )
        if copy is not None and (gap := copy.gap()) is not None:
            console.print(f"note: {gap} (the copy is within the {copy.allowed:.0f} s allowed)")
    _print_erasures(report.erasures)
    for note in report.keys_notes:
        console.print(f"audit keys: {note}")
    if report.keys_problem is not None:
        console.print(f"audit keys: {report.keys_problem}")
        console.print("audit log NOT verified: no report is made with audit keys the log did not record")
    return report


def _print_erasures(erasures: ErasureReconciliation) -> None:
    """What the reconciliation of erased tokens with erase rows found (no token is printed)."""
    for finding in erasures.findings:
        console.print(f"ERASURES DO NOT MATCH THE AUDIT LOG: {finding.reason}")
    if erasures.findings:
        console.print(
            f"audit log NOT verified: {len(erasures.findings)} erasure finding(s); its erase records cannot be"
            " trusted to name what was erased, and no report is made from it"
        )
        return
    before = (
        f"; {erasures.before_naming} erased before erase records named tokens (migration 0023)"
        if erasures.before_naming
        else ""
    )
    console.print(f"erasures reconciled: {erasures.named} erased token(s), each named by one erase record{before}")


def _copy_lag(config: VaultServiceConfig, max_copy_lag: float | None) -> float:
    """Seconds the exported copy may be behind the database's checkpoints: given, or COPY_LAG_INTERVALS intervals."""
    return max_copy_lag if max_copy_lag is not None else COPY_LAG_INTERVALS * config.audit_checkpoint_seconds


def audit_verify(config: VaultServiceConfig, exported: Path | None, max_copy_lag: float | None = None) -> int:
    """Check the audit log; 0 when intact, 1 naming the first record concerned (or the exported copy too old)."""
    wired = bootstrap(config)
    try:
        report = _verified(wired, exported or config.audit_checkpoint_file, _copy_lag(config, max_copy_lag))
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
    wired = bootstrap(config)
    try:
        report = _verified(wired, exported or config.audit_checkpoint_file, _copy_lag(config, max_copy_lag))
        if not report.intact:
            return 1
        records = who_saw(report, wired.keys.ring.audit_keys, token)
        table = Table("record", "when (UTC)", "action", "client", "certificate serial", "purpose", "outcome")
        for r in records:
            table.add_row(
                str(r.record_id),
                r.at.isoformat(timespec="seconds"),
                r.event.action,
                r.event.client,
                r.event.client_serial or "-",
                purpose_as_shown(r.event.purpose),  # every row listed is a Detokenize's or an Erase's
                r.event.outcome,
            )
        console.print(table)
        erasures = sum(r.event.action == "erase" for r in records)
        console.print(f"{len(records) - erasures} reveal(s) and {erasures} erasure(s) of this token")
        return 0
    finally:
        wired.close()
