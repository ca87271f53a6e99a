"""The vault over real gRPC/mTLS, OpenBao Transit and Postgres."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import certs
from tests.conftest import RunningVault, running_vault
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_common.grpc_tls import secure_channel
from vault_service.entrypoints.health_listener import create_health_server
from vault_service.entrypoints.server import LIVENESS_SERVICE
from vault_service.service.maintenance import DATABASE

IP, DEVICE = vault_pb2.TOKEN_TYPE_IP, vault_pb2.TOKEN_TYPE_DEVICE_ID
StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]


TypeValue = tuple[vault_pb2.TokenType.ValueType, str]


def tokenize(stub: vault_pb2_grpc.TokenVaultStub, *items: TypeValue) -> list[vault_pb2.TokenizeResult]:
    request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=t, value=v) for t, v in items])
    return list(stub.Tokenize(request, timeout=10).results)


def test_tokens_are_stable_random_and_per_item(stub_for: StubFor) -> None:
    etl = stub_for("etl-service")
    first = tokenize(etl, (IP, "203.0.113.7"), (DEVICE, "555-12-0001"), (IP, "bad ip"), (IP, "203.0.113.7"))
    assert first[0].token.startswith("ip_") and first[1].token.startswith("dev_")
    assert first[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "bad ip" not in first[2].error.message
    assert first[3].token == first[0].token
    assert tokenize(etl, (IP, "203.0.113.7"))[0].token == first[0].token


def test_tokens_survive_a_restart_of_the_service(stack_env: dict[str, str], stub_for: StubFor) -> None:
    before = tokenize(stub_for("etl-service"), (IP, "198.51.100.20"))[0].token
    with running_vault(stack_env) as restarted:
        after = tokenize(stub_for("etl-service", restarted.address), (IP, "198.51.100.20"))[0].token
    assert after == before


def test_two_replicas_tokenizing_the_same_new_values_at_once_agree(
    stack_env: dict[str, str], vault: RunningVault, stub_for: StubFor
) -> None:
    values = [(IP, f"10.77.{i // 250}.{i % 250}") for i in range(500)]
    results: dict[str, list[str]] = {}
    with running_vault(stack_env) as second:
        stubs = {"a": stub_for("etl-service"), "b": stub_for("etl-service", second.address)}
        barrier = threading.Barrier(2)

        def work(name: str) -> None:
            barrier.wait()
            results[name] = [r.token for r in tokenize(stubs[name], *values)]

        threads = [threading.Thread(target=work, args=(n,)) for n in stubs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results["a"] == results["b"] and len(set(results["a"])) == 500


def test_analyst_sees_ip_plain_and_device_masked_and_the_call_is_audited(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    ip_token, device_token = (
        r.token for r in tokenize(stub_for("etl-service"), (IP, "192.0.2.55"), (DEVICE, "593-47-5928"))
    )
    request = vault_pb2.DetokenizeRequest(tokens=[ip_token, device_token, "ip_" + "Z" * 22], purpose="TICKET-7")
    results = stub_for("analyst").Detokenize(request, timeout=10).results
    assert (results[0].value.value, results[0].value.reveal) == ("192.0.2.55", vault_pb2.REVEAL_PLAIN)
    assert (results[1].value.value, results[1].value.reveal) == ("***-**-5928", vault_pb2.REVEAL_MASKED)
    assert results[2].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            # The shared vault's metering flush (the ETL's tokenize counts) may land after this
            # call's row, so the newest reveal is what is read, not the newest row.
            "SELECT client, purpose, item_count, token_types FROM vault.audit_log"
            " WHERE action = 'detokenize' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    # Kept: the made-up token names no value the purpose could spell (review 12, finding 1).
    assert row == ("analyst", "TICKET-7", 3, "device_id,ip")


@pytest.mark.parametrize(
    ("client", "call", "code"),
    [
        ("etl-service", "detokenize", grpc.StatusCode.PERMISSION_DENIED),
        ("analyst", "tokenize", grpc.StatusCode.PERMISSION_DENIED),
        ("fraud-investigator", "tokenize", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_clients_may_only_do_what_the_policy_says(
    stub_for: StubFor, client: str, call: str, code: grpc.StatusCode
) -> None:
    stub = stub_for(client)
    with pytest.raises(grpc.RpcError) as error:
        if call == "tokenize":
            tokenize(stub, (IP, "10.0.0.1"))
        else:
            stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=["ip_" + "A" * 22], purpose="x"), timeout=10)
    assert error.value.code() == code
    assert client in (error.value.details() or "")


def test_detokenize_without_purpose_is_invalid_argument(stub_for: StubFor) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub_for("analyst").Detokenize(vault_pb2.DetokenizeRequest(tokens=["ip_" + "A" * 22]), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "purpose" in (error.value.details() or "")


def test_certificate_from_another_ca_cannot_connect(
    vault: RunningVault, tmp_path: Path, stack_env: dict[str, str]
) -> None:
    rogue_ca = certs.create_authority(tmp_path, "rogue CA")
    rogue = certs.issue(rogue_ca, tmp_path, "analyst")
    channel = secure_channel(vault.address, Path(stack_env["TLS_CA_CERT"]), rogue.cert, rogue.key, "localhost")
    with channel, pytest.raises(grpc.RpcError) as error:
        vault_pb2_grpc.TokenVaultStub(channel).Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "A" * 22], purpose="x"), timeout=5
        )
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_vault_table_holds_no_plaintext(stack_env: dict[str, str], stub_for: StubFor) -> None:
    tokenize(stub_for("etl-service"), (IP, "100.64.12.34"), (DEVICE, "777-77-7777"))
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        dump = " ".join(str(row) for row in conn.execute("SELECT * FROM vault.tokens").fetchall())
        keys = " ".join(str(row) for row in conn.execute("SELECT * FROM vault.data_keys").fetchall())
    assert "100.64.12.34" not in dump and b"100.64.12.34".hex() not in dump
    assert "777-77-7777" not in dump
    assert all(w.startswith("vault:v") for w in keys.split("'") if w.startswith("vault:"))


def test_the_plaintext_health_port_answers_probes_and_serves_nothing_else(vault: RunningVault) -> None:
    server, port = create_health_server(vault.server.health, "127.0.0.1:0")
    server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # stubs omit it

            def status(service: str) -> int:
                return int(check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)

            assert status("") == status(LIVENESS_SERVICE) == serving
            vault.server.report(DATABASE, False)  # what the key maintainer reports when Postgres fails
            try:
                assert status("") != serving and status(LIVENESS_SERVICE) == serving
            finally:
                vault.server.report(DATABASE, True)
            with pytest.raises(grpc.RpcError) as error:
                vault_pb2_grpc.TokenVaultStub(channel).Tokenize(vault_pb2.TokenizeRequest(), timeout=5)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(0).wait()


def test_value_columns_get_the_same_tokens_as_items_and_errors_by_position(stub_for: StubFor) -> None:
    etl = stub_for("etl-service")
    ips = ["198.51.100.20", "not an ip", "198.51.100.21", "198.51.100.20"]
    devices = ["555-77-0001"]
    request = vault_pb2.TokenizeRequest(
        items=[vault_pb2.TokenizeItem(type=DEVICE, value="555-77-0002")],
        columns=[vault_pb2.ValueColumn(type=IP, values=ips), vault_pb2.ValueColumn(type=DEVICE, values=devices)],
    )
    response = etl.Tokenize(request, timeout=10)
    assert response.results[0].token.startswith("dev_")  # items and columns in one request
    ip_column, device_column = response.columns
    assert len(ip_column.tokens) == len(ips)
    assert ip_column.tokens[0] == ip_column.tokens[3] and ip_column.tokens[0].startswith("ip_")
    assert ip_column.tokens[1] == "" and set(ip_column.errors) == {1}
    assert ip_column.errors[1].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not an ip" not in ip_column.errors[1].message
    by_item = tokenize(etl, (IP, ips[0]), (IP, ips[2]), (DEVICE, devices[0]))
    assert [r.token for r in by_item] == [ip_column.tokens[0], ip_column.tokens[2], device_column.tokens[0]]


def test_a_column_of_an_unspecified_type_fails_per_value_not_the_call(stub_for: StubFor) -> None:
    column = vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_UNSPECIFIED, values=["198.51.100.30", "x"])
    response = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=10)
    (answer,) = response.columns
    assert list(answer.tokens) == ["", ""]
    assert {i: e.code for i, e in answer.errors.items()} == {0: 3, 1: 3}


def test_the_per_call_limit_counts_column_values(stub_for: StubFor) -> None:
    column = vault_pb2.ValueColumn(type=IP, values=[f"10.9.{i // 256}.{i % 256}" for i in range(10_001)])
    with pytest.raises(grpc.RpcError) as error:
        stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 10000" in (error.value.details() or "")


def test_nothing_is_revealed_when_the_audit_row_cannot_be_written(stack_env: dict[str, str], stub_for: StubFor) -> None:
    (token,) = (r.token for r in tokenize(stub_for("etl-service"), (IP, "192.0.2.77")))
    analyst = stub_for("analyst")
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        # The database refuses this one purpose: the audit append fails as a full disk would.
        conn.execute("ALTER TABLE vault.audit_log ADD CONSTRAINT refuse_test CHECK (purpose <> 'AUDIT-DOWN')")
        try:
            with pytest.raises(grpc.RpcError) as refused:
                analyst.Detokenize(vault_pb2.DetokenizeRequest(tokens=[token], purpose="AUDIT-DOWN"), timeout=10)
        finally:
            conn.execute("ALTER TABLE vault.audit_log DROP CONSTRAINT refuse_test")
    details = refused.value.details() or ""
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "audit log cannot be written" in details
    assert "192.0.2.77" not in details and "AUDIT-DOWN" not in details  # nor the database's row dump
    # The chain is whole and the next call reveals again, audited.
    again = analyst.Detokenize(vault_pb2.DetokenizeRequest(tokens=[token], purpose="AUDIT-UP"), timeout=10)
    assert again.results[0].value.value == "192.0.2.77"


def test_a_purpose_with_a_nul_byte_is_invalid_argument_and_the_refusal_is_audited(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "Q" * 22], purpose="NUL-\x00-CASE"), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "printable" in (refused.value.details() or "")
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT client, outcome, purpose FROM vault.audit_log WHERE action = 'detokenize' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row == ("analyst", "refused: InvalidRequest", "")  # the unfit purpose itself is not kept
