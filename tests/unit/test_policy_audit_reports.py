"""The policy's `audit_reports`: which clients the vault makes its audit reports for (AuditReports), parsed strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault_service.domain.errors import InvalidRequest, InvalidValue, PermissionDenied
from vault_service.domain.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "config" / "vault-policy.toml", ROOT / "deploy" / "k8s" / "vault-policy.toml")
"""Every policy the project ships: the embedded stack's and compose's, and the Kubernetes one."""


def _policy(**security_team: object) -> dict[str, object]:
    return {"clients": {"security-team": security_team, "analyst": {"detokenize": {"ip": "plain"}}}}


def test_a_client_given_audit_reports_may_ask_for_them_and_no_other_client_may() -> None:
    policy = parse_policy(_policy(audit_reports=["verify", "who-saw"]))

    policy.check_audit_report("security-team", "verify")
    policy.check_audit_report("security-team", "who-saw")
    with pytest.raises(PermissionDenied, match="client 'analyst' may not ask for the audit report verify: audit"):
        policy.check_audit_report("analyst", "verify")


def test_a_client_given_who_saw_may_not_verify() -> None:
    policy = parse_policy(_policy(audit_reports=["who-saw"]))

    with pytest.raises(PermissionDenied, match=r'audit_reports = \["verify"\]'):
        policy.check_audit_report("security-team", "verify")


def test_an_unknown_report_asked_for_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="no audit report 'status'; the audit reports are verify, who-saw"):
        parse_policy(_policy(audit_reports=["verify"])).check_audit_report("security-team", "status")


@pytest.mark.parametrize(
    ("audit_reports", "message"),
    [
        (["verify", "who_saw"], "audit_reports names unknown report(s) who_saw; known: verify, who-saw"),
        ("verify", "audit_reports must be a list of report names"),
        ([True], "audit_reports must be a list of report names"),
    ],
)
def test_a_malformed_audit_reports_stops_the_vault(audit_reports: object, message: str) -> None:
    with pytest.raises(InvalidValue, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(_policy(audit_reports=audit_reports))


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_shipped_policy_gives_the_reports_to_the_security_team_and_who_saw_to_the_privacy_officer(
    shipped: Path,
) -> None:
    policy = load_policy(shipped)

    given = {name: set(p.audit_reports) for name, p in policy.clients.items() if p.audit_reports}
    assert given == {"security-team": {"verify", "who-saw"}, "privacy-officer": {"who-saw"}}


def test_a_client_that_tokenizes_may_not_ask_who_saw_unless_it_accepts_the_oracle() -> None:
    etl = {"tokenize": ["ip", "device_id"], "audit_reports": ["who-saw"]}
    with pytest.raises(InvalidValue, match="may tokenize and ask who saw a token - an oracle"):
        parse_policy({"clients": {"etl-service": etl}})

    parse_policy({"clients": {"etl-service": {**etl, "oracle": "accepted"}}})  # knowingly
    parse_policy({"clients": {"etl-service": {"tokenize": ["ip"], "audit_reports": ["verify"]}}})  # no token asked


def test_reports_are_metered_per_client_six_then_one_every_five_minutes_by_default() -> None:
    policy = parse_policy(
        {
            "clients": {
                "privacy-officer": {"audit_reports": ["who-saw"]},
                "security-team": {
                    "audit_reports": ["verify"],
                    "limits": {"audit_reports_per_second": 0.01, "audit_reports_burst": 2},
                },
            }
        }
    )

    officer, team = (policy.clients[name].limits.audit_reports for name in ("privacy-officer", "security-team"))
    assert (officer.burst, round(1 / officer.per_second)) == (6, 300)
    assert (team.burst, team.per_second) == (2, 0.01)
