"""Walk 47, W47-8: row security on vault.audit_log made `audit verify` lead with "audit log TAMPERED" and
"ERASURES DO NOT MATCH" - the log was whole, only hidden from the report's reads (a non-owner's session sees no
row of a table with row security and no policy). The row security comes first now, and what was read is said
as not judged; without row security the alarms are as before.
"""

from __future__ import annotations

from vault_service.domain.checkpoints import Finding
from vault_service.entrypoints.audit_report_lines import finding_of, verdict_lines
from vault_service.service.audit_verify import FullAuditReport
from vault_service.service.erase_reconciliation import ErasureReconciliation

ROW_SECURITY = (
    "table vault.audit_log differs from its migration's definition: row security enabled (migrations: disabled)"
)
RULE = "rule w47_rule on vault.tokens is in no migration"


def _report(schema_changes: tuple[str, ...]) -> FullAuditReport:
    erasures = ErasureReconciliation(
        named=0, before_naming=0, findings=(Finding(None, "an erased ip token is named by no erase record"),)
    )
    chain = Finding(None, "rows up to 52 no longer match the signed checkpoint")
    return FullAuditReport(0, 1, 0, chain, (), erasures=erasures, keys_problem=None, schema_changes=schema_changes)


def test_row_security_on_a_vault_table_leads_and_what_was_read_is_not_judged() -> None:
    lines = verdict_lines(_report((ROW_SECURITY, RULE)), copy_given=True)
    assert lines[0].startswith("audit log NOT verified: row security on the vault's tables may hide rows"), lines
    assert ROW_SECURITY in lines[0] and "DISABLE ROW LEVEL SECURITY" in lines[0], lines[0]
    said = "\n".join(lines)
    assert "TAMPERED" not in said and "ERASURES DO NOT MATCH" not in said, said  # before: both, first
    assert "as read, NOT JUDGED (row security above): the chain fails from the newest records" in said, said
    assert "NOT JUDGED (row security above): erasures do not match the audit log: an erased ip token" in said, said
    assert f"the vault schema differs from its migrations: {RULE}" in said  # the other findings still listed
    assert finding_of(_report((ROW_SECURITY,))).startswith("audit log NOT verified: row security on the vault's")


def test_a_policy_on_a_vault_table_is_row_security_too_and_without_either_the_alarms_stand() -> None:
    policy = "policy w47_pol on vault.audit_log is in no migration"
    assert verdict_lines(_report((policy,)), copy_given=True)[0].startswith("audit log NOT verified: row security")
    lines = verdict_lines(_report((RULE,)), copy_given=True)
    assert lines[0].startswith("audit log TAMPERED from the newest records: rows up to 52"), lines
    assert "ERASURES DO NOT MATCH THE AUDIT LOG: an erased ip token is named by no erase record" in lines, lines


def test_who_saw_prints_certificate_serials_as_openssl_does() -> None:
    """Walk 47, W47-13: `072CC7...` (openssl x509 -serial) was printed `72cc7...`: a search by it missed it."""
    from vault_service.entrypoints.audit_report_lines import serial_as_openssl_prints_it

    assert serial_as_openssl_prints_it("72cc7499bfb713f33df6b91ee3f633e20651540") == (
        "072CC7499BFB713F33DF6B91EE3F633E20651540"
    )
    assert serial_as_openssl_prints_it("1a2b") == "1A2B"
    assert serial_as_openssl_prints_it("") == "" and serial_as_openssl_prints_it("unknown") == "unknown"


def test_row_security_on_a_table_the_chain_does_not_read_leaves_the_tampering_judged() -> None:
    """Review 47, R47-14: `CREATE POLICY p ON vault.tokens USING (true)` turned a real "audit log TAMPERED" into
    "as read, NOT JUDGED", and the one-line verdict (finding_of) dropped the chain's finding."""
    policy = "policy p on vault.tokens is in no migration"
    lines = verdict_lines(_report((policy,)), copy_given=True)
    assert lines[0].startswith("audit log NOT verified: row security on the vault's tables may hide rows"), lines
    assert "the chain is judged below" in lines[0], lines[0]
    said = "\n".join(lines)
    assert "audit log TAMPERED from the newest records: rows up to 52" in said, said  # before: NOT JUDGED
    assert "NOT JUDGED (row security above): erasures do not match" in said, said  # tokens: the erasures' read
    one_line = finding_of(_report((policy,)))
    assert one_line.startswith("audit log NOT verified: row security on the vault's"), one_line
    assert one_line.endswith("; audit log TAMPERED: rows up to 52 no longer match the signed checkpoint"), one_line
    on_log = finding_of(_report(("policy q on vault.audit_log is in no migration",)))
    assert on_log.endswith(
        "; as read, NOT JUDGED (row security above): the chain fails: rows up to 52 no longer"
        " match the signed checkpoint"
    ), on_log
