"""Attack 40: a client that issues itself certificates gains no audited refusals and no key-command budget by it.

A40-1: the front door's refusals were throttled per certificate (its SHA-256), and the ETL's agent may issue
`etl-service` certificates at will (`pki/issue/tokenvault-clients`): each brought a fresh burst of 50 audited
refusal rows (12,001 rows in 33 s from 240 certificates). Now per client name: the client's certificates
together write at most the one burst, then 5 a second; each row still names its own certificate.

A40-2: the key commands' budgets were per certificate only, and the security team signs its own
(`pki/sign`, production.md): 5 certificates, 151 `status` scans at once instead of 30. Now the client's
certificates together get CLIENT_CERTIFICATES times one certificate's budget; one certificate (a stale copy)
still spends only its own share (review 33, R33-4).

Each test runs a vault of its own (the throttles are per process) with certificates issued by the stack's
client CA, as the ETL's and the team's rights issue them.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devstack import certs
from tests.conftest import running_vault
from tokenvault_api.v1 import key_jobs_pb2, key_jobs_pb2_grpc, vault_pb2, vault_pb2_grpc
from tokenvault_client import ClientIdentity, open_channel
from vault_service.domain.rate_limit import CLIENT_CERTIFICATES
from vault_service.service.metering import REFUSALS_AUDITED_PER_PEER

ETL = "etl-service"
TEAM = "security-team"


def _certificates(env: dict[str, str], tmp_path: Path, name: str, count: int) -> list[tuple[ClientIdentity, str]]:
    """`count` certificates of `name` from the stack's client CA, each another serial: (identity, SHA-256 hex)."""
    authority = certs.load_authority(Path(env["STACK_DIR"]) / "certs")
    minted = []
    for i in range(count):
        pair = certs.issue(authority, tmp_path / f"{name}-{i}", name)
        digest = x509.load_pem_x509_certificate(pair.cert.read_bytes()).fingerprint(hashes.SHA256()).hex()
        minted.append((ClientIdentity(authority.cert_path, pair.cert, pair.key, "localhost"), digest))
    return minted


def _empty_detokenize(stub: vault_pb2_grpc.TokenVaultStub) -> grpc.StatusCode:
    """An empty Detokenize (refused INVALID_ARGUMENT at the front door, audited): its status."""
    try:
        stub.Detokenize(vault_pb2.DetokenizeRequest(purpose="INC-4821"), timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_an_etl_minting_certificates_gets_no_fresh_burst_of_audited_refusals_with_each(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    minted = _certificates(stack_env, tmp_path, ETL, 4)
    calls = 60
    with running_vault(stack_env) as vault, psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        (before,) = admin.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()  # type: ignore[misc]
        codes: list[list[grpc.StatusCode]] = []
        started = time.monotonic()
        for identity, _ in minted:
            with open_channel(vault.address, identity) as channel:
                stub = vault_pb2_grpc.TokenVaultStub(channel)
                codes.append([_empty_detokenize(stub) for _ in range(calls)])
        elapsed = time.monotonic() - started
        rows = admin.execute(
            "SELECT client_cert_sha256 FROM vault.audit_log WHERE id > %s AND client = %s AND action = 'detokenize'"
            " AND outcome LIKE 'refused: InvalidRequest%%'",
            (before, ETL),
        ).fetchall()
    limit = REFUSALS_AUDITED_PER_PEER
    bound = limit.burst + limit.per_second * elapsed + 1
    print(f"{len(rows)} audited refusals from {len(minted)} certificates in {elapsed:.1f} s (bound {bound:.0f})")
    assert codes[0][: limit.burst] == [grpc.StatusCode.INVALID_ARGUMENT] * limit.burst  # the one burst
    assert limit.burst <= len(rows) <= bound, (len(rows), bound)  # on the old code: 4 x 50
    for later in codes[1:]:  # a new certificate of the same client: throttled with the others
        assert later.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= calls - limit.per_second * elapsed - 1, later
    assert {digest for (digest,) in rows} <= {digest for _, digest in minted}  # each row names its certificate
    assert minted[0][1] in {digest for (digest,) in rows}


def test_certificates_the_team_signs_itself_share_one_bounded_key_command_budget(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    minted = _certificates(stack_env, tmp_path, TEAM, CLIENT_CERTIFICATES + 2)
    answered: list[int] = []
    refusals: list[str] = []
    with running_vault(stack_env) as vault:
        started = time.monotonic()
        for identity, _ in minted:
            served = 0
            with open_channel(vault.address, identity) as channel:
                stub = key_jobs_pb2_grpc.KeyJobsStub(channel)
                for _ in range(40):
                    try:
                        stub.Status(key_jobs_pb2.KeyStatusRequest(), timeout=10)
                        served += 1
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                        refusals.append(error.details() or "")
            answered.append(served)
        elapsed = time.monotonic() - started
    burst, rate = 30, 1.0  # the shipped key_status budget of one certificate
    bound = CLIENT_CERTIFICATES * (burst + rate * elapsed) + 1
    print(f"status answered per certificate: {answered} in {elapsed:.1f} s (bound {bound:.0f})")
    # Per certificate still (R33-4): the first certificates each get their own burst, no more.
    assert all(burst <= n <= burst + rate * elapsed + 1 for n in answered[:CLIENT_CERTIFICATES]), answered
    assert sum(answered) <= bound, (answered, bound)  # on the old code: 30 per certificate, 5 x 30
    assert any(f"{TEAM!r}'s certificates together" in text for text in refusals), refusals
