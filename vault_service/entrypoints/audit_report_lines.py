"""The audit reports in words: the lines `audit verify` prints, and a who-saw row's cells.

One wording for both ways of asking: the service account's command (`python -m vault_service.admin
audit-verify`, audit_report_cli.py) prints these lines, and the vault's AuditReports service sends
them to the caller, whose `tokenvault audit verify` prints them as they come.
"""

from __future__ import annotations

import re

from vault_service.domain.audit import AuditRecord
from vault_service.domain.purpose import purpose_as_shown
from vault_service.service.audit_verify import FullAuditReport
from vault_service.service.erase_reconciliation import ErasureReconciliation

NO_COPY = (
    "NOT checked against any exported copy (pass --exported COPY): the database's owner can delete the newest"
    " rows together with their checkpoints, which only a copy outside the database exposes"
)
"""What the service account's command says when it was given no copy to read."""


AS_READ = "as read, NOT JUDGED (row security above)"
"""Put before what the report read once row security may have hidden rows from it (walk 47, W47-8)."""


def hiding_changes(changes: tuple[str, ...]) -> tuple[str, ...]:
    """The schema's differences that let the database choose which rows a report reads: row security, policies.

    Row security enabled (or forced) on a vault table, or a policy on one: the report's sessions leave
    row_security at its default, so such a table answers them only the rows its policies let through (none, with
    no policy) - a log read so looks rewritten and its erasures unmatched though nothing was changed.
    """
    return tuple(
        change
        for change in changes
        if change.startswith("policy ")
        or ": row security enabled (migrations:" in change
        or "forced row security forced (migrations:" in change
    )


CHAIN_TABLES = frozenset({"audit_log", "audit_checkpoints"})
"""The vault tables the chain's verification reads: row security elsewhere cannot hide its rows (R47-14)."""
ERASURE_TABLES = CHAIN_TABLES | {"tokens", "erase_tokens"}
"""The vault tables the erasures' reconciliation reads."""
_HIDING_ON = re.compile(r"^(?:policy .* on vault\.(\w+) |table vault\.(\w+) differs from)")


def hidden_tables(hiding: tuple[str, ...]) -> frozenset[str] | None:
    """The vault tables `hiding` is on; None when one of them names no table it can be told from (all may hide)."""
    tables = set()
    for change in hiding:
        found = _HIDING_ON.match(change)
        if found is None:
            return None
        tables.add(found.group(1) or found.group(2))
    return frozenset(tables)


def hides_from(hiding: tuple[str, ...], read: frozenset[str]) -> bool:
    """Whether row security in `hiding` is on a table of `read`, so rows read from them may be hidden."""
    tables = hidden_tables(hiding)
    return bool(hiding) and (tables is None or not tables.isdisjoint(read))


def hidden_rows_finding(hiding: tuple[str, ...]) -> str:
    """The line a report leads with when row security may have hidden rows from its reads ('' when none)."""
    if not hiding:
        return ""
    named = "; ".join(hiding[:3]) + (f"; and {len(hiding) - 3} more" if len(hiding) > 3 else "")
    chain, erasures = hides_from(hiding, CHAIN_TABLES), hides_from(hiding, ERASURE_TABLES)
    if chain:
        judged = (
            ", so the chain and the erasures cannot be judged from them - what they show below may be rows hidden, not"
            " rewritten."
        )
    elif erasures:  # review 47, R47-14: not on the audit log's tables - the chain below is judged all the same
        judged = (
            ", so the erasures cannot be judged from them; the chain's tables (vault.audit_log,"
            " vault.audit_checkpoints) have none: the chain is judged below."
        )
    else:
        judged = "; none is on a table this report reads: the chain and the erasures are judged below."
    return (
        f"audit log NOT verified: row security on the vault's tables may hide rows from this report's reads ({named})"
        + judged
        + " The database owner's change: report it to the security team, remove it (ALTER TABLE ..."
        " DISABLE ROW LEVEL SECURITY, DROP POLICY ... ON ...) and verify again"
    )


def verdict_lines(report: FullAuditReport, copy_given: bool, no_copy: str = NO_COPY) -> list[str]:
    """What verification found, line by line; `copy_given`: a copy was read, else `no_copy` says what was not.

    Row security on a vault table comes first, and what was read from that table is then said as not judged
    (W47-8); a finding in tables it is not on stands as it is (review 47, R47-14: a policy on vault.tokens does not
    make the audit log's tampering "not judged").
    """
    lines: list[str] = []
    hiding = hiding_changes(report.schema_changes)
    if hiding:
        lines.append(hidden_rows_finding(hiding))
    copy = report.copy
    if copy is not None:
        lines.append(copy.read)
    where = f"; {report.unanchored} newest row(s) not checkpointed yet" if report.unanchored else ""
    if report.finding is not None:
        first = f"record id {report.finding.first_row}" if report.finding.first_row else "the newest records"
        if hides_from(hiding, CHAIN_TABLES):
            lines.append(f"{AS_READ}: the chain fails from {first}: {report.finding.reason}")
        else:
            lines.append(
                f"audit log TAMPERED from {first}: {report.finding.reason}; records from there on cannot be trusted"
            )
    elif copy is not None and copy.too_old:
        lines.append(
            f"hash chain and {report.checkpoints} signed checkpoint(s) hold for {report.rows} record(s), but the"
            f" exported copy is too old to verify the newest: {copy.gap()}, {copy.behind:.0f} s more than the"
            f" {copy.allowed:.0f} s allowed (--max-copy-lag). The database's owner can delete its newest rows"
            " with their checkpoints, which only the copy exposes"
        )
        lines.append(
            "audit log NOT verified: verify against a fresher copy holding every replica's checkpoint lines (is"
            " the log shipper running?), or pass --max-copy-lag for a known shipping delay"
        )
    else:
        verdict = "audit log intact" if report.intact else "audit log chain intact"
        if copy_given:
            checked = f"hash chain, {report.checkpoints} signed checkpoint(s) and the exported copy verified{where}"
        else:  # said plainly: what the database alone vouches for (review 30, R30-4)
            checked = f"hash chain and {report.checkpoints} signed checkpoint(s) verified{where}; {no_copy}"
        lines.append(f"{verdict}: {report.rows} record(s), {checked}")
        if copy is not None and (gap := copy.gap()) is not None:
            lines.append(f"note: {gap} (the copy is within the {copy.allowed:.0f} s allowed)")
    lines += _erasure_lines(report.erasures, AS_READ if hides_from(hiding, ERASURE_TABLES) else "")
    lines += _reveals_after_erasure_lines(report.reveals_after_erasure)
    lines += _schema_lines(report.schema_changes)
    lines += [f"audit keys: {note}" for note in report.keys_notes]
    if report.keys_problem is not None:
        lines.append(f"audit keys: {report.keys_problem}")
        lines.append("audit log NOT verified: no report is made with audit keys the log did not record")
    return lines


def _erasure_lines(erasures: ErasureReconciliation, as_read: str = "") -> list[str]:
    """What the reconciliation of erased tokens with erase rows found (no token is named).

    `as_read`: said instead of the alarm when the rows read may be filtered (row security: not judged).
    """
    if as_read:
        return [f"{as_read}: erasures do not match the audit log: {finding.reason}" for finding in erasures.findings]
    lines = [f"ERASURES DO NOT MATCH THE AUDIT LOG: {finding.reason}" for finding in erasures.findings]
    if erasures.findings:
        lines.append(
            f"audit log NOT verified: {len(erasures.findings)} erasure finding(s); its erase records cannot be"
            " trusted to name what was erased, and no report is made from it"
        )
        return lines
    before = (
        f"; {erasures.before_naming} erased before erase records named tokens (migration 0023)"
        if erasures.before_naming
        else ""
    )
    lines.append(f"erasures reconciled: {erasures.named} erased token(s), each named by one erase record{before}")
    return lines


AFTER_ERASURE = "REVEALED AFTER AN ERASURE of this token: the erasure was undone in the database"
"""Added to the outcome of a who-saw row that is a reveal after an erasure of the same token (attack 41, A41-2)."""


def reveals_after_erasure_finding(ids: tuple[int, ...]) -> str:
    """The one-line finding of reveal records naming a token an earlier erase record named ('' when none)."""
    if not ids:
        return ""
    listed = ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    return (
        f"{len(ids)} reveal(s) after an erasure of the same token: the erasure was undone - its value written back"
        f" in the database and revealed again (records {listed}); report it to the security team, who-saw of the"
        " token marks them"
    )


def _reveals_after_erasure_lines(ids: tuple[int, ...]) -> list[str]:
    if not ids:
        return []
    return [
        reveals_after_erasure_finding(ids),
        "audit log NOT verified: a value was revealed after its erasure",
    ]


SCHEMA_DIFFERS = "the vault schema differs from its migrations"
"""How each difference between the vault schema's guards and the migrations' is said (attack 43, A43-4/A43-5)."""


def schema_finding(changes: tuple[str, ...]) -> str:
    """The one-line finding of the vault schema's differences from its migrations ('' when none)."""
    if not changes:
        return ""
    listed = "; ".join(changes[:10]) + (f"; and {len(changes) - 10} more" if len(changes) > 10 else "")
    return f"{SCHEMA_DIFFERS}: {listed}"


def _schema_lines(changes: tuple[str, ...]) -> list[str]:
    if not changes:
        return []
    return [
        *(f"{SCHEMA_DIFFERS}: {change}" for change in changes),
        f"audit log NOT verified: {len(changes)} difference(s) between what guards the vault's tables and what the"
        " migrations define (a guard - constraint, index, trigger, rule, policy, row security, column, grant or"
        " function - dropped, disabled, added or changed): erasures and uniqueness cannot be trusted to hold; report"
        " it to the security team",
    ]


def finding_of(report: FullAuditReport) -> str:
    """Why the log is not verified, in one line ('' when it is)."""
    if report.intact:
        return ""
    if hiding := hiding_changes(report.schema_changes):  # what was read may be filtered: that first (W47-8)
        if report.finding is None:
            return hidden_rows_finding(hiding)
        # ... and the chain's finding after it, never dropped (review 47, R47-14): judged unless the row security is
        # on a table the chain reads.
        chain = (
            f"{AS_READ}: the chain fails" if hides_from(hiding, CHAIN_TABLES) else "audit log TAMPERED"
        ) + f": {report.finding.reason}"
        return f"{hidden_rows_finding(hiding)}; {chain}"
    if report.finding is not None:
        return report.finding.reason
    if report.copy is not None and report.copy.too_old:
        return "the exported copy is too old to verify the newest records"
    if report.erasures.findings:
        return report.erasures.findings[0].reason
    if report.keys_problem is None and report.reveals_after_erasure:
        return reveals_after_erasure_finding(report.reveals_after_erasure)
    if report.keys_problem is None and report.schema_changes:
        return schema_finding(report.schema_changes)
    return report.keys_problem or "the audit log did not verify"


WHO_SAW_COLUMNS = ("record", "when (UTC)", "action", "client", "certificate serial", "purpose", "outcome")
"""The columns of who-saw's table."""


def serial_as_openssl_prints_it(serial: str) -> str:
    """A certificate serial as `openssl x509 -serial` prints it: uppercase hex, even length (W47-13).

    The audit log keeps it as recorded (lowercase, no leading zero: `format(serial, "x")`), which a search for
    openssl's form missed about once in sixteen certificates. What is no hex is shown as it is.
    """
    try:
        int(serial, 16)
    except ValueError:
        return serial
    return serial.upper().zfill(len(serial) + len(serial) % 2)


def who_saw_cells(record: AuditRecord, after_erasure: bool = False) -> tuple[str, str, str, str, str, str, str]:
    """One listed record as who-saw shows it: never a value (a reveal's row holds none).

    `after_erasure`: a reveal after an erasure of the token (`reveals_after_erasure`): its outcome says so.
    """
    return (
        str(record.record_id),
        record.at.isoformat(timespec="seconds"),
        record.event.action,
        record.event.client,
        serial_as_openssl_prints_it(record.event.client_serial) or "-",
        purpose_as_shown(record.event.purpose),
        f"{record.event.outcome} - {AFTER_ERASURE}" if after_erasure else record.event.outcome,
    )


def who_saw_summary(actions: list[str]) -> str:
    """The count line under who-saw's table: reveals and erasures (and earlier who-saw questions, when any)."""
    erasures = actions.count("erase")
    questions = actions.count("who-saw")
    reveals = len(actions) - erasures - questions
    asked = f"; asked about {questions} time(s) before (who-saw)" if questions else ""
    return f"{reveals} reveal(s) and {erasures} erasure(s) of this token{asked}"
