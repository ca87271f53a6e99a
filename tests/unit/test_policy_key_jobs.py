"""The policy's `key_jobs`: which clients the vault runs its key jobs for (KeyJobs), parsed strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault_service.domain.errors import InvalidRequest, InvalidValue, PermissionDenied
from vault_service.domain.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "vault-policy.toml"
EVERY_KEY_COMMAND = {
    "reencrypt",
    "reindex",
    "status",
    "rewrap",
    "rotate-encryption-key",
    "rotate-fingerprint-key",
    "retire-kek-versions",
}


def _policy(**security_team: object) -> dict[str, object]:
    return {"clients": {"security-team": security_team, "analyst": {"detokenize": {"ip": "plain"}}}}


def test_a_client_given_key_jobs_may_run_them_and_no_other_client_may() -> None:
    policy = parse_policy(_policy(key_jobs=["reencrypt", "reindex"]))

    policy.check_key_job("security-team", "reencrypt")
    policy.check_key_job("security-team", "reindex")
    with pytest.raises(PermissionDenied, match="client 'analyst' may not run the key job reencrypt: key jobs are"):
        policy.check_key_job("analyst", "reencrypt")


def test_a_client_given_one_job_may_not_run_the_other() -> None:
    policy = parse_policy(_policy(key_jobs=["reindex"]))

    with pytest.raises(PermissionDenied, match=r'key_jobs = \["reencrypt"\]'):
        policy.check_key_job("security-team", "reencrypt")


def test_an_unknown_job_asked_for_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="no key job 'export'; the key jobs are reencrypt, reindex, status"):
        parse_policy(_policy(key_jobs=["reencrypt"])).check_key_job("security-team", "export")


def test_a_client_given_the_jobs_only_may_not_run_the_short_key_commands() -> None:
    policy = parse_policy(_policy(key_jobs=["reencrypt", "reindex"]))

    for command in EVERY_KEY_COMMAND - {"reencrypt", "reindex"}:
        with pytest.raises(PermissionDenied, match=f"may not run the key job {command}"):
            policy.check_key_job("security-team", command)


@pytest.mark.parametrize(
    ("key_jobs", "message"),
    [
        (["reencrypt", "export"], "key_jobs names unknown job(s) export; known: reencrypt, reindex, status"),
        ("reencrypt", "key_jobs must be a list of job names"),
        ([1], "key_jobs must be a list of job names"),
    ],
)
def test_a_malformed_key_jobs_stops_the_vault(key_jobs: object, message: str) -> None:
    with pytest.raises(InvalidValue, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(_policy(key_jobs=key_jobs))


@pytest.mark.parametrize("shipped", [SHIPPED, ROOT / "deploy" / "k8s" / "vault-policy.toml"])
def test_the_shipped_policies_give_every_key_command_to_the_security_team_only(shipped: Path) -> None:
    policy = load_policy(shipped)

    assert {name for name, p in policy.clients.items() if p.key_jobs} == {"security-team"}
    assert policy.clients["security-team"].key_jobs == EVERY_KEY_COMMAND
    assert not policy.may_detokenize_anything("security-team") and not policy.clients["security-team"].tokenize
