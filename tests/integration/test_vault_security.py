"""Authorization matrix, rate limits, erasure and the audit chain, over real gRPC/mTLS and Postgres."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import psycopg
import pytest

from devstack import certs
from devstack.stack import vault_service_env
from tests.conftest import RunningVault, client_channel, running_vault
from tests.integration.audit_rows import last_audit_id
from tests.integration.fresh_values import fresh_value
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_common.grpc_tls import secure_channel

IP, DEVICE = vault_pb2.TOKEN_TYPE_IP, vault_pb2.TOKEN_TYPE_DEVICE_ID
StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
TokenTypeValue: TypeAlias = vault_pb2.TokenType.ValueType
REPO = Path(__file__).resolve().parents[2]

# What each client may do per type, as config/vault-policy.toml says; "stranger" holds a
# certificate from the vault's CA but is not in the policy.
EXPECTED = {
    ("etl-service", "tokenize"): {IP: "token", DEVICE: "token"},
    ("etl-service", "detokenize"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("etl-service", "erase"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("analyst", "tokenize"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("analyst", "detokenize"): {IP: "plain", DEVICE: "masked"},
    ("analyst", "erase"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("fraud-investigator", "tokenize"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("fraud-investigator", "detokenize"): {IP: "plain", DEVICE: "plain"},
    ("fraud-investigator", "erase"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("privacy-officer", "tokenize"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("privacy-officer", "detokenize"): {IP: "PERMISSION_DENIED", DEVICE: "PERMISSION_DENIED"},
    ("privacy-officer", "erase"): {IP: "erased", DEVICE: "erased"},
    ("stranger", "tokenize"): {IP: "UNAUTHENTICATED", DEVICE: "UNAUTHENTICATED"},
    ("stranger", "detokenize"): {IP: "UNAUTHENTICATED", DEVICE: "UNAUTHENTICATED"},
    ("stranger", "erase"): {IP: "UNAUTHENTICATED", DEVICE: "UNAUTHENTICATED"},
}


@pytest.fixture(scope="module")
def stranger_certificate(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> certs.CertPair:
    authority = certs.load_authority(Path(stack_env["STACK_DIR"]) / "certs")
    return certs.issue(authority, tmp_path_factory.mktemp("stranger"), "stranger")


def observe(
    stub: vault_pb2_grpc.TokenVaultStub, action: str, token_type: TokenTypeValue, token: str, value: str
) -> str:
    """What the caller sees: token / plain / masked / erased, or the status code name."""
    try:
        if action == "tokenize":
            request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=token_type, value=value)])
            result = stub.Tokenize(request, timeout=10).results[0]
            return "token" if result.token == token else _code_name(result.error.code)
        if action == "detokenize":
            request_d = vault_pb2.DetokenizeRequest(tokens=[token], purpose="matrix")
            detok = stub.Detokenize(request_d, timeout=10).results[0]
            if detok.WhichOneof("result") == "error":
                return _code_name(detok.error.code)
            shown = detok.value
            if shown.reveal == vault_pb2.REVEAL_PLAIN:
                assert shown.value == value
                return "plain"
            assert shown.value != value
            return "masked"
        erased = stub.Erase(vault_pb2.EraseRequest(tokens=[token], purpose="matrix"), timeout=10).results[0]
        return "erased" if erased.erased else _code_name(erased.error.code)
    except grpc.RpcError as error:
        return error.code().name


def _code_name(code: int) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == code)


@pytest.mark.parametrize(
    ("client", "action", "token_type"),
    [(c, a, t) for (c, a), types in EXPECTED.items() for t in types],
)
def test_authorization_matrix(
    stack_env: dict[str, str],
    vault: RunningVault,
    stub_for: StubFor,
    stranger_certificate: certs.CertPair,
    client: str,
    action: str,
    token_type: vault_pb2.TokenType.ValueType,
) -> None:
    value = fresh_value(token_type)
    issued = stub_for("etl-service").Tokenize(
        vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=token_type, value=value)]),
        timeout=10,
    )
    token = issued.results[0].token
    if client == "stranger":
        channel = secure_channel(
            vault.address,
            Path(stack_env["TLS_CA_CERT"]),
            stranger_certificate.cert,
            stranger_certificate.key,
            "localhost",
        )
        stub = vault_pb2_grpc.TokenVaultStub(channel)
    else:
        stub = stub_for(client)
    assert observe(stub, action, token_type, token, value) == EXPECTED[(client, action)][token_type]


def test_unknown_client_gets_unauthenticated_with_an_actionable_message(
    stack_env: dict[str, str], vault: RunningVault, stranger_certificate: certs.CertPair
) -> None:
    channel = secure_channel(
        vault.address, Path(stack_env["TLS_CA_CERT"]), stranger_certificate.cert, stranger_certificate.key, "localhost"
    )
    with channel, pytest.raises(grpc.RpcError) as error:
        vault_pb2_grpc.TokenVaultStub(channel).Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "A" * 22], purpose="x"), timeout=5
        )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "'stranger' is unknown to the vault policy" in (error.value.details() or "")


@pytest.fixture
def limited_vault(stack_env: dict[str, str], tmp_path: Path) -> Iterator[RunningVault]:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[clients.etl-service]\ntokenize = ["ip"]\n'
        '[clients.analyst.detokenize]\nip = "plain"\n'
        "[clients.analyst.limits]\ndetokenize_per_second = 20\ndetokenize_burst = 10\n"
    )
    with running_vault(stack_env, TOKENVAULT_POLICY_FILE=str(policy)) as running:
        yield running


def test_detokenize_rate_limit_gives_resource_exhausted_and_recovers(
    stack_env: dict[str, str], limited_vault: RunningVault
) -> None:
    before = last_audit_id(stack_env)
    with client_channel(stack_env, limited_vault.address, "analyst") as channel:
        stub = vault_pb2_grpc.TokenVaultStub(channel)

        def detokenize(count: int) -> grpc.StatusCode:
            request = vault_pb2.DetokenizeRequest(tokens=["ip_" + "B" * 22] * count, purpose="rate")
            try:
                stub.Detokenize(request, timeout=5)
            except grpc.RpcError as error:
                assert "detokenize" in (error.details() or "") or "burst" in (error.details() or "")
                return error.code()
            return grpc.StatusCode.OK

        assert detokenize(11) == grpc.StatusCode.RESOURCE_EXHAUSTED  # larger than the burst
        assert detokenize(10) == grpc.StatusCode.OK
        assert detokenize(5) == grpc.StatusCode.RESOURCE_EXHAUSTED  # bucket empty
        time.sleep(0.3)  # 20/s refills 6 items
        assert detokenize(5) == grpc.StatusCode.OK
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        outcomes = [
            r[0]
            for r in conn.execute(
                # The purpose is withheld (the token is made up: no value was compared with it).
                "SELECT outcome FROM vault.audit_log WHERE id > %s AND client = 'analyst' AND action = 'detokenize'"
                " ORDER BY id DESC LIMIT 4",
                (before,),
            ).fetchall()
        ]
    assert outcomes[::-1][0] == "refused: RateLimited" and outcomes[::-1][2] == "refused: RateLimited"


def test_erasure_forgets_the_value_everywhere_and_is_audited(stack_env: dict[str, str], stub_for: StubFor) -> None:
    value = fresh_value(IP)
    # A second replica whose cache already holds the token must stop handing it out.
    with running_vault(stack_env, TOKENVAULT_KEY_CHECK_SECONDS="1") as replica:
        etl, etl_replica = stub_for("etl-service"), stub_for("etl-service", replica.address)
        item = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=IP, value=value)])
        token = etl.Tokenize(item, timeout=10).results[0].token
        assert etl_replica.Tokenize(item, timeout=10).results[0].token == token  # now cached there

        purpose = "GDPR-" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])  # letters: a case ref
        before = last_audit_id(stack_env)
        erase = vault_pb2.EraseRequest(tokens=[token, "ip_" + "C" * 22, "not-a-token"], purpose=purpose)
        results = stub_for("privacy-officer").Erase(erase, timeout=10).results
        assert results[0].erased
        assert results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        again = stub_for("privacy-officer").Erase(vault_pb2.EraseRequest(tokens=[token], purpose=purpose), timeout=10)
        assert again.results[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]

        detok = stub_for("fraud-investigator").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-AFTER-ERASURE"), timeout=10
        )
        assert detok.results[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]
        new_token = etl.Tokenize(item, timeout=10).results[0].token
        assert new_token != token
        deadline = time.monotonic() + 10
        while etl_replica.Tokenize(item, timeout=10).results[0].token != new_token:
            assert time.monotonic() < deadline, "the replica kept returning the erased token"
            time.sleep(0.2)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        audited = conn.execute(
            "SELECT client, action, outcome, purpose FROM vault.audit_log"
            " WHERE id > %s AND client = 'privacy-officer' ORDER BY id",
            (before,),
        ).fetchall()
        sealed = conn.execute("SELECT sealed, fingerprint FROM vault.tokens WHERE token = %s", (token,)).fetchone()
    # One row, written in the same transaction as the erasure (vault.erase_tokens). Its purpose is
    # kept: the made-up token and the junk string name no value it could spell; the retry's is
    # withheld: the erased value can no longer be compared with it (review 12, finding 1).
    assert audited[:2] == [
        ("privacy-officer", "erase", "ok: 1 erased, 2 not erased", purpose),
        ("privacy-officer", "erase", "ok: 0 erased, 1 not erased", ""),
    ]
    assert sealed == (None, None)


def _verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vault_service.admin", "audit-verify"],
        env={**vault_service_env(env), "PATH": "/usr/bin:/bin"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_audit_chain_verifies_and_reports_the_first_tampered_row(
    stack_env: dict[str, str], vault: RunningVault, stub_for: StubFor
) -> None:
    analyst = stub_for("analyst")
    item = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=IP, value=fresh_value(IP))])
    token = stub_for("etl-service").Tokenize(item, timeout=10).results[0].token  # a value to compare the purpose with
    for n in range(3):
        analyst.Detokenize(vault_pb2.DetokenizeRequest(tokens=[token], purpose=f"CHAIN-{n}"), timeout=10)
    vault.wait_for_checkpoint()  # run alone, the session's vault has exported none yet
    intact = _verify(stack_env)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit log intact" in intact.stdout

    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        (target,) = conn.execute("SELECT id FROM vault.audit_log WHERE purpose = 'CHAIN-1'").fetchone()  # type: ignore[misc]
        # A superuser bypasses the append-only trigger to rewrite history, as an attacker would.
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE vault.audit_log SET purpose = 'nothing to see' WHERE id = %s", (target,))
        try:
            tampered = _verify(stack_env)
        finally:
            conn.execute("UPDATE vault.audit_log SET purpose = 'CHAIN-1' WHERE id = %s", (target,))
    assert tampered.returncode == 1
    assert f"TAMPERED from record id {target}" in tampered.stdout
    assert _verify(stack_env).returncode == 0


def test_audit_log_refuses_changes_even_from_its_owner(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("DELETE FROM vault.audit_log")


def test_metrics_count_calls_and_items_by_method_and_code(stub_for: StubFor) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_ok = sample("tokenvault_grpc_requests_total", method="Tokenize", code="OK")
    before_bad = sample("tokenvault_grpc_items_total", method="Tokenize", code="INVALID_ARGUMENT")
    before_denied = sample("tokenvault_grpc_requests_total", method="Tokenize", code="PERMISSION_DENIED")
    stub_for("etl-service").Tokenize(
        vault_pb2.TokenizeRequest(
            items=[vault_pb2.TokenizeItem(type=IP, value="10.1.1.1"), vault_pb2.TokenizeItem(type=IP, value="x")]
        ),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError):
        # One value: a call without any is refused at the front door (INVALID_ARGUMENT) before permissions.
        stub_for("analyst").Tokenize(
            vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=IP, value="10.1.1.2")]), timeout=10
        )
    assert sample("tokenvault_grpc_requests_total", method="Tokenize", code="OK") == before_ok + 1
    assert sample("tokenvault_grpc_items_total", method="Tokenize", code="INVALID_ARGUMENT") == before_bad + 1
    assert sample("tokenvault_grpc_requests_total", method="Tokenize", code="PERMISSION_DENIED") == before_denied + 1
    assert sample("tokenvault_grpc_request_seconds_count", method="Tokenize") > 0
