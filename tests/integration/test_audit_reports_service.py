"""The audit reports made by the vault service for the security team's certificate (tokenvault.v1.AuditReports).

Real OpenBao and Postgres: the security team's certificate has the running vault verify its audit
log against the vault's own exported copy and say who saw a token, with the vault's own credentials
(the caller holds no database role or Vault login); each report is an audit row naming the
certificate (a who-saw row keeps the token's keyed hash, never the token); the analyst's and the
ETL's certificates are refused PERMISSION_DENIED on the record; the privacy officer may ask who saw
a token but not verify; a second report while one runs is refused naming it, and a report held
past its deadline ends in the vault too; a tampered row makes Verify name it. No value is in any
answer, error or log line. One database and vault for the module (the tampering test has its own).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import RunningVault, client_channel, running_vault, stack_identity, vault_clients, vault_config
from tests.integration.audit_attacks import Anchored, anchored, as_owner, own_database
from tests.integration.audit_rows import client_certificate
from tests.integration.own_database import database_of_its_own
from tokenvault_api.v1 import audit_reports_pb2, audit_reports_pb2_grpc
from tokenvault_client import InvalidArgument, PermissionDenied, RateLimited, TokenType, VaultClient, VaultClientError

__all__ = ["anchored", "own_database"]  # fixtures used here

SECURITY_TEAM = "security-team"
IP = TokenType.IP


@pytest.fixture(scope="module")
def own_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    checkpoints = tmp_path_factory.mktemp("audit-reports") / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "reports", migrated=True, checkpoint_file=checkpoints) as env:
        yield env


@pytest.fixture(scope="module")
def own_vault(own_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVault]:
    # The stack's policy, the security team given reports enough for this module (the officer keeps the default).
    policy = tmp_path_factory.mktemp("audit-reports-policy") / "vault-policy.toml"
    shipped = vault_config(own_env).policy_file.read_text()
    team_limits = "[clients.security-team.limits]\naudit_reports_per_second = 0.1\naudit_reports_burst = 30\n"
    assert team_limits in shipped  # config/vault-policy.toml's
    policy.write_text(
        shipped.replace(team_limits, team_limits.replace("0.1", "1").replace("burst = 30", "burst = 100"))
    )
    with running_vault(own_env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1", TOKENVAULT_POLICY_FILE=str(policy)) as running:
        yield running


@pytest.fixture
def client_as(own_env: dict[str, str], own_vault: RunningVault) -> Iterator[Callable[[str], VaultClient]]:
    with vault_clients(own_env, own_vault.address) as make:
        yield make


def _rows(env: dict[str, str], action: str, after: int = 0) -> list[tuple[str, str, str, str, str, int]]:
    """(client, serial, cert sha256, outcome, token_types, token hashes) of the `action` rows after `after`."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT client, client_serial, client_cert_sha256, outcome, token_types, cardinality(revealed)"
            " FROM vault.audit_log WHERE action = %s AND id > %s ORDER BY id",
            (action, after),
        ).fetchall()
    return [(str(a), str(b), str(c), str(d), str(e), int(f or 0)) for a, b, c, d, e, f in rows]


def _newest_id(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()
    return int(row[0]) if row else 0


def _log_text(env: dict[str, str], after: int) -> str:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT * FROM vault.audit_log WHERE id > %s", (after,)).fetchall()
    return repr(rows)


def test_the_security_team_has_the_vault_verify_its_log_and_the_call_is_on_the_record(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    client_as("etl-service").tokenize([(IP, "10.91.0.1")])
    own_vault.wait_for_checkpoint()
    before = _newest_id(own_env)

    verdict = client_as(SECURITY_TEAM).audit_verify()

    assert verdict.intact and verdict.first_row == 0 and verdict.finding == "" and verdict.rows > 0
    assert any(line.startswith("audit log intact") and "the exported copy verified" in line for line in verdict.lines)
    assert any(line.startswith("erasures reconciled") for line in verdict.lines)
    serial, digest = client_certificate(own_env, SECURITY_TEAM)
    ((client, row_serial, row_digest, outcome, _, _),) = _rows(own_env, "audit-verify", before)
    assert (client, row_serial, row_digest) == (SECURITY_TEAM, serial, digest)
    assert outcome.startswith("ok: intact")


def test_the_service_is_in_health_and_reflection(own_env: dict[str, str], own_vault: RunningVault) -> None:
    channel = client_channel(own_env, own_vault.address, SECURITY_TEAM)
    try:
        health = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="tokenvault.v1.AuditReports"), timeout=5
        )
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # its module has no type stubs
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        listing = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    finally:
        channel.close()
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "tokenvault.v1.AuditReports" in {s.name for s in listing.list_services_response.service}


def test_who_saw_lists_the_reveals_by_client_purpose_and_outcome_and_never_a_value(
    own_env: dict[str, str],
    own_vault: RunningVault,
    client_as: Callable[[str], VaultClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    values = ["10.91.1.7", "10.91.1.8"]
    watched, unseen = (str(t) for t in client_as("etl-service").tokenize([(IP, v) for v in values]))
    client_as("analyst").detokenize([watched], "CASE-9301")
    client_as("fraud-investigator").detokenize([watched, unseen], "CASE-9302")
    own_vault.wait_for_checkpoint()
    before = _newest_id(own_env)

    verdict, rows = client_as(SECURITY_TEAM).audit_who_saw(watched, purpose="INC-9301")

    assert verdict.intact
    assert [(r.action, r.client, r.purpose) for r in rows] == [
        ("detokenize", "analyst", "CASE-9301"),
        ("detokenize", "fraud-investigator", "CASE-9302"),
    ]
    assert all(r.outcome.startswith("ok: ") and r.client_serial and r.at for r in rows)
    answer = repr((verdict, rows))
    assert not any(value in answer or value in caplog.text for value in values)
    ((client, _, _, outcome, types, hashes),) = _rows(own_env, "who-saw", before)
    assert (client, outcome, types, hashes) == (SECURITY_TEAM, "ok: 2 record(s) listed", "ip", 1)
    assert watched not in _log_text(own_env, before)  # its keyed hash only

    own_vault.wait_for_checkpoint()
    _, officers = client_as("privacy-officer").audit_who_saw(
        watched, purpose="DSAR-2026-0042"
    )  # the team's question is not its to see
    _, teams = client_as(SECURITY_TEAM).audit_who_saw(watched, purpose="INC-9302")  # both questions are on the record
    assert [r.action for r in officers] == ["detokenize", "detokenize"]
    assert [(r.action, r.client, r.purpose) for r in teams][2:] == [
        ("who-saw", SECURITY_TEAM, "INC-9301"),  # each question with the request it answers
        ("who-saw", "privacy-officer", "DSAR-2026-0042"),
    ]


@pytest.mark.parametrize("client", ["analyst", "etl-service"])
def test_other_certificates_are_refused_on_the_record(
    own_env: dict[str, str], client_as: Callable[[str], VaultClient], client: str
) -> None:
    token = str(client_as("etl-service").tokenize([(IP, "10.91.2.1")])[0])
    before = _newest_id(own_env)

    with pytest.raises(PermissionDenied) as verify:
        client_as(client).audit_verify()
    with pytest.raises(PermissionDenied) as who:
        client_as(client).audit_who_saw(token, purpose="CASE-1")

    assert f"client {client!r} may not ask for the audit report verify" in verify.value.details
    assert f"client {client!r} may not ask for the audit report who-saw" in who.value.details
    for action in ("audit-verify", "who-saw"):
        assert [(c, o) for c, _, _, o, _, _ in _rows(own_env, action, before)] == [
            (client, "refused: PermissionDenied")
        ]
    assert token not in _log_text(own_env, before)


def test_the_privacy_officer_asks_who_saw_but_may_not_verify(client_as: Callable[[str], VaultClient]) -> None:
    with pytest.raises(PermissionDenied, match="audit report verify"):
        client_as("privacy-officer").audit_verify()


@pytest.mark.parametrize("purpose", ["", "DSAR-10.91.8.8"])
def test_who_saw_without_a_purpose_fit_to_keep_is_refused_on_the_record_and_keeps_none(
    own_env: dict[str, str], client_as: Callable[[str], VaultClient], purpose: str
) -> None:
    token = str(client_as("etl-service").tokenize([(IP, "10.91.8.1")])[0])
    before = _newest_id(own_env)

    with pytest.raises(InvalidArgument) as refused:
        client_as("privacy-officer").audit_who_saw(token, purpose=purpose)

    assert "purpose" in refused.value.details and "10.91.8.8" not in refused.value.details
    assert [o for _, _, _, o, _, _ in _rows(own_env, "who-saw", before)] == ["refused: InvalidRequest"]
    assert "10.91.8.8" not in _log_text(own_env, before) and token not in _log_text(own_env, before)


def test_an_argument_that_is_no_token_is_refused_and_kept_nowhere(
    own_env: dict[str, str], client_as: Callable[[str], VaultClient]
) -> None:
    before = _newest_id(own_env)

    with pytest.raises(InvalidArgument) as refused:
        client_as(SECURITY_TEAM).audit_who_saw("10.91.3.3", purpose="INC-1")

    assert "is not a token" in refused.value.details and "10.91.3.3" not in refused.value.details
    assert [o for _, _, _, o, _, _ in _rows(own_env, "who-saw", before)] == ["refused: InvalidRequest"]
    assert "10.91.3.3" not in _log_text(own_env, before)


def test_one_report_at_a_time_and_a_held_report_ends_with_its_deadline(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    own_vault.wait_for_checkpoint()
    before = _newest_id(own_env)
    first: list[VaultClientError] = []
    owner = psycopg.connect(own_env["PG_ADMIN_DSN"])
    try:
        owner.execute("LOCK TABLE vault.audit_checkpoints IN ACCESS EXCLUSIVE MODE")  # its reads wait
        held = threading.Thread(target=_verify_into, args=(client_as(SECURITY_TEAM), first, 2.0))
        held.start()
        time.sleep(0.5)
        with pytest.raises(VaultClientError) as second:
            client_as(SECURITY_TEAM).audit_verify()
        held.join(10)
        time.sleep(1.0)  # the vault's statement ends at the deadline, and it says so on the record
        outcomes = [o for _, _, _, o, _, _ in _rows(own_env, "audit-verify", before)]
    finally:
        owner.close()

    assert second.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "an audit report is being made on this vault already (verify for 'security-team'" in second.value.details
    assert first and first[0].code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert outcomes == ["refused: AuditReportRunning", "refused: AuditReportTooLong"]
    assert client_as(SECURITY_TEAM).audit_verify().intact  # the one report at a time is free again


def test_a_report_whose_caller_went_away_stops_frees_the_slot_and_is_recorded_refused(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    own_vault.wait_for_checkpoint()
    before = _newest_id(own_env)
    with _verify_cancelled_while_checkpoints_locked(own_env, own_vault):
        time.sleep(0.3)
    outcomes = _wait_for_rows(own_env, "audit-verify", before)  # the read went on: the report ends at its next check

    assert outcomes == ["refused: AuditReportTooLong"]  # never "ok: intact": nobody received it
    assert client_as(SECURITY_TEAM).audit_verify().intact  # the one report at a time is free again


def test_a_report_whose_caller_went_away_has_its_running_statement_cancelled_at_once(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    own_vault.wait_for_checkpoint()
    before = _newest_id(own_env)
    with _verify_cancelled_while_checkpoints_locked(own_env, own_vault):
        outcomes = _wait_for_rows(own_env, "audit-verify", before)  # the lock still held: cancelled, not ended
        with psycopg.connect(own_env["PG_ADMIN_DSN"]) as watcher:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tokenvault-vault'"
                " AND wait_event_type = 'Lock' AND query LIKE '%%audit_checkpoints%%'"
            ).fetchone()

    assert outcomes == ["refused: AuditReportTooLong"] and waiting == (0,)
    assert client_as(SECURITY_TEAM).audit_verify().intact


@contextmanager
def _verify_cancelled_while_checkpoints_locked(env: dict[str, str], vault: RunningVault) -> Iterator[None]:
    """A Verify of the security team's, its reads waiting on the audit checkpoints the owner locked, cancelled after
    0.5 s (the caller goes away while the report waits); the lock is held until the `with` ends."""
    channel = client_channel(env, vault.address, SECURITY_TEAM)
    owner = psycopg.connect(env["PG_ADMIN_DSN"])
    try:
        owner.execute("LOCK TABLE vault.audit_checkpoints IN ACCESS EXCLUSIVE MODE")  # its reads wait
        call = audit_reports_pb2_grpc.AuditReportsStub(channel).Verify.future(
            audit_reports_pb2.AuditVerifyRequest(), timeout=60
        )
        time.sleep(0.5)
        call.cancel()
        yield
    finally:
        owner.rollback()
        owner.close()
        channel.close()


def _wait_for_rows(env: dict[str, str], action: str, after: int) -> list[str]:
    for _ in range(50):
        outcomes = [o for _, _, _, o, _, _ in _rows(env, action, after)]
        if outcomes:
            return outcomes
        time.sleep(0.1)
    return []


def test_a_log_larger_than_the_vault_may_hold_is_refused_on_the_record_naming_the_remedy(
    own_env: dict[str, str], client_as: Callable[[str], VaultClient]
) -> None:
    client_as("etl-service").tokenize([(IP, "10.91.5.1")])
    before = _newest_id(own_env)
    with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:
        counted = conn.execute("SELECT count(*) FROM vault.audit_log").fetchone()
    with (
        running_vault(own_env, TOKENVAULT_AUDIT_REPORT_MAX_ROWS="1") as small,
        VaultClient.connect(small.address, stack_identity(own_env, SECURITY_TEAM)) as security,
        pytest.raises(VaultClientError) as refused,
    ):
        security.audit_verify()

    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    said = re.search(r"the audit log has (\d+) rows, more than the 1 a report made", refused.value.details)
    # Counted as they are (the chain's ids skip: two sequence values a row); rows may have come since the count
    # (the session vault's aggregated tokenize row, written by its own round).
    assert said is not None and counted is not None and counted[0] <= int(said.group(1)) <= counted[0] + 3, said
    assert "TOKENVAULT_AUDIT_REPORT_MAX_ROWS" in refused.value.details
    assert "python -m vault_service.admin audit-verify" in refused.value.details
    assert [o for _, _, _, o, _, _ in _rows(own_env, "audit-verify", before)] == ["refused: AuditReportTooLarge"]


def test_a_missing_checkpoint_file_is_refused_on_the_record_without_the_servers_path(
    own_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet" / "checkpoints.jsonl"
    before = _newest_id(own_env)
    with (
        running_vault(
            own_env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(missing), TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="300"
        ) as vault,
        VaultClient.connect(vault.address, stack_identity(own_env, SECURITY_TEAM)) as security,
        pytest.raises(VaultClientError) as refused,
    ):
        security.audit_verify()

    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "checkpoint copy" in refused.value.details and "cannot be read" in refused.value.details
    assert str(tmp_path) not in refused.value.details
    assert [o for _, _, _, o, _, _ in _rows(own_env, "audit-verify", before)] == ["refused: AuditCopyRefused"]


def test_a_vault_without_a_copy_says_plainly_that_no_copy_was_checked_and_how_to_check_the_shipped_one(
    own_env: dict[str, str],
) -> None:
    with (
        running_vault(own_env, TOKENVAULT_AUDIT_CHECKPOINT_FILE="") as vault,  # as the Kubernetes manifests
        VaultClient.connect(vault.address, stack_identity(own_env, SECURITY_TEAM)) as security,
    ):
        verdict = security.audit_verify()

    (line,) = [line for line in verdict.lines if line.startswith("audit log intact")]
    assert "NOT checked against any copy outside the database" in line and "exported copy verified" not in line
    assert "python -m vault_service.admin audit-verify --exported COPY" in line


def test_reports_are_metered_per_client_so_the_officer_cannot_keep_the_team_out(
    own_env: dict[str, str], client_as: Callable[[str], VaultClient]
) -> None:
    token = str(client_as("etl-service").tokenize([(IP, "10.91.6.1")])[0])
    before = _newest_id(own_env)
    officer = client_as("privacy-officer")
    limited: list[RateLimited] = []
    for _ in range(7):  # the default budget: 6 at once (this module's officer asked before), then one per 300 s
        try:
            officer.audit_who_saw(token, purpose="DSAR-2026-0043")
        except RateLimited as error:
            limited.append(error)
            break

    assert limited and limited[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < limited[0].retry_after <= 300 and "audit report" in limited[0].details
    assert [o for c, _, _, o, _, _ in _rows(own_env, "who-saw", before)][-1] == "refused: RateLimited"
    assert client_as(SECURITY_TEAM).audit_verify().intact  # the team's budget is its own


def _verify_into(client: VaultClient, errors: list[VaultClientError], deadline: float) -> None:
    try:
        client.audit_verify(deadline=deadline)
    except VaultClientError as error:
        errors.append(error)


def test_a_tampered_row_is_named_by_the_vaults_verify(own_database: dict[str, str], anchored: Anchored) -> None:
    vault, _ = anchored
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        etl.tokenize([(IP, f"10.91.4.{n}") for n in range(1, 4)])
    vault.wait_for_checkpoint()
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT max(id) FROM vault.audit_log").fetchone()
    assert row is not None
    target = int(row[0])
    with as_owner(own_database) as conn:
        conn.execute("UPDATE vault.audit_log SET purpose = 'nothing to see' WHERE id = %s", (target,))

    with VaultClient.connect(vault.address, stack_identity(own_database, SECURITY_TEAM)) as security:
        verdict = security.audit_verify()
        who_verdict, rows = security.audit_who_saw("ip_" + "A" * 22, purpose="INC-2")

    assert not verdict.intact and 0 < verdict.first_row <= target and verdict.finding
    assert any(line.startswith(f"audit log TAMPERED from record id {verdict.first_row}") for line in verdict.lines)
    assert not who_verdict.intact and rows == []  # no report from a log that does not verify


def test_a_vault_without_a_copy_verifies_against_the_copy_the_team_sends_and_finds_the_deleted_reveal(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # Review 30, R30-4: the Kubernetes manifests give the vault no copy file, and the database's owner
    # deleted a reveal with every newer row and checkpoint: the vault's own Verify still says intact.
    vault, exported = anchored
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        (token,) = etl.tokenize([(IP, "10.91.7.1")])
    vault.wait_for_checkpoint()
    with VaultClient.connect(vault.address, stack_identity(own_database, "analyst")) as analyst:
        analyst.detokenize([str(token)], "CASE-7701")
    vault.wait_for_checkpoint()
    vault.wait_for_checkpoint()  # the reveal's checkpoint is in the copy the team holds
    shipped = exported.read_bytes()
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT min(id) FROM vault.audit_log WHERE purpose = 'CASE-7701'").fetchone()
    assert row is not None and row[0] is not None
    with as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id >= %s", (row[0],))
        conn.execute("DELETE FROM vault.audit_log WHERE id >= %s", (row[0],))

    with (
        running_vault(own_database, TOKENVAULT_AUDIT_CHECKPOINT_FILE="") as no_copy,
        VaultClient.connect(no_copy.address, stack_identity(own_database, SECURITY_TEAM)) as security,
    ):
        alone = security.audit_verify()
        against = security.audit_verify(exported_copy=shipped)
        with pytest.raises(VaultClientError) as nothing:
            security.audit_verify(exported_copy=b"no checkpoint in this\n")

    assert alone.intact and any("NOT checked against any copy" in line for line in alone.lines)
    assert not against.intact and "the exported copy holds a checkpoint at row" in against.finding
    assert any("read from the-copy-sent-with-the-call" in line for line in against.lines)
    assert nothing.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "the exported checkpoint copy sent was refused" in nothing.value.details
