"""tokenvault_client against the real vault server (in-process, real OpenBao and Postgres)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from devstack import certs
from tests.conftest import RunningVault, running_vault, stack_identity
from tokenvault_client import (
    ChunkLimits,
    ClientIdentity,
    ItemError,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    Reveal,
    Revealed,
    TokenType,
    Unauthenticated,
    Unavailable,
    VaultClient,
)

ClientFor = Callable[..., VaultClient]


def fresh_ips(count: int) -> list[str]:
    n = uuid.uuid4().int
    return [f"10.{(n >> 8) % 250}.{(i >> 8) % 256}.{i % 256}" for i in range(count)]


def test_columns_round_trip_through_several_calls(client_for: ClientFor) -> None:
    ips = [*fresh_ips(2500), "not an ip"]
    devices = [f"{i:03d}-12-{i:04d}" for i in range(300)]
    etl = client_for("etl-service", limits=ChunkLimits(max_items=1000))
    ip_column, device_column = etl.tokenize_columns([(TokenType.IP, ips), (TokenType.DEVICE_ID, devices)])
    assert all(t.startswith("ip_") for t in ip_column.tokens[:-1]) and ip_column.tokens[-1] == ""
    assert ip_column.errors[len(ips) - 1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an ip" not in ip_column.errors[len(ips) - 1].message
    assert etl.tokenize([(TokenType.IP, ips[1234])]) == [ip_column.tokens[1234]]
    revealed = client_for("fraud-investigator").detokenize(ip_column.tokens[:3] + device_column.tokens[:1], "CASE-1")
    assert [r.value for r in revealed if isinstance(r, Revealed)] == [*ips[:3], devices[0]]


def test_the_analyst_sees_ips_plain_and_device_ids_masked(client_for: ClientFor) -> None:
    (ip_token,), (device_token,) = (
        c.tokens
        for c in client_for("etl-service").tokenize_columns(
            [(TokenType.IP, ["192.0.2.77"]), (TokenType.DEVICE_ID, ["593-47-5928"])]
        )
    )
    ip, device, missing = client_for("analyst").detokenize([ip_token, device_token, "ip_" + "Q" * 22], "CASE-2")
    assert ip == Revealed(TokenType.IP, "192.0.2.77", Reveal.PLAIN)
    assert device == Revealed(TokenType.DEVICE_ID, "***-**-5928", Reveal.MASKED)
    assert isinstance(missing, ItemError) and missing.code == grpc.StatusCode.NOT_FOUND


def test_a_refused_call_is_a_typed_error_naming_the_certificate(
    client_for: ClientFor, stack_env: dict[str, str]
) -> None:
    with pytest.raises(PermissionDenied) as raised:
        client_for("analyst").erase(["ip_" + "Q" * 22], "ERASE-1")
    assert "may not erase" in str(raised.value) and str(stack_identity(stack_env, "analyst").cert) in str(raised.value)


def test_a_certificate_unknown_to_the_policy_is_unauthenticated(
    stack_env: dict[str, str], vault: RunningVault, tmp_path: Path
) -> None:
    authority = certs.load_authority(Path(stack_env["STACK_DIR"]) / "certs")
    pair = certs.issue(authority, tmp_path, "stranger")
    identity = ClientIdentity(authority.cert_path, pair.cert, pair.key, "localhost")
    with VaultClient.connect(vault.address, identity) as stranger, pytest.raises(Unauthenticated) as raised:
        stranger.detokenize(["ip_" + "Q" * 22], "CASE-3")
    assert "stranger.pem" in str(raised.value)


def test_a_certificate_from_another_ca_fails_the_handshake_with_a_hint(
    stack_env: dict[str, str], vault: RunningVault, tmp_path: Path
) -> None:
    other = certs.create_authority(tmp_path)
    pair = certs.issue(other, tmp_path, "analyst")
    identity = ClientIdentity(stack_identity(stack_env, "analyst").ca, pair.cert, pair.key, "localhost")
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.05)
    with VaultClient.connect(vault.address, identity, retry=policy, deadline=5) as client:
        with pytest.raises(Unavailable) as raised:
            client.detokenize(["ip_" + "Q" * 22], "CASE-4")
        assert "issued by the vault's CA" in str(raised.value) and str(pair.cert) in str(raised.value)
        with pytest.raises(Unavailable):
            client.ready()


def test_erase_then_the_token_reveals_nothing(client_for: ClientFor) -> None:
    (token,) = client_for("etl-service").tokenize([(TokenType.IP, fresh_ips(1)[0])])
    assert isinstance(token, str)
    officer = client_for("privacy-officer")
    assert officer.erase([token], "ERASE-2") == [None]
    (again,) = officer.erase([token], "ERASE-2")
    assert isinstance(again, ItemError) and again.code == grpc.StatusCode.NOT_FOUND
    (gone,) = client_for("fraud-investigator").detokenize([token], "CASE-5")
    assert isinstance(gone, ItemError) and gone.code == grpc.StatusCode.NOT_FOUND


@pytest.fixture
def limited_vault(stack_env: dict[str, str], tmp_path: Path) -> Iterator[RunningVault]:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[clients.etl-service]\ntokenize = ["ip"]\n'
        '[clients.analyst.detokenize]\nip = "plain"\n'
        "[clients.analyst.limits]\ndetokenize_per_second = 200\ndetokenize_burst = 150\n"
    )
    with running_vault(stack_env, TOKENVAULT_POLICY_FILE=str(policy)) as running:
        yield running


def test_detokenize_splits_to_the_burst_and_waits_out_the_rate(
    stack_env: dict[str, str], limited_vault: RunningVault
) -> None:
    etl = VaultClient.connect(limited_vault.address, stack_identity(stack_env, "etl-service"))
    analyst = VaultClient.connect(limited_vault.address, stack_identity(stack_env, "analyst"))
    with etl, analyst:
        ips = fresh_ips(600)
        (column,) = etl.tokenize_columns([(TokenType.IP, ips)])
        started = time.monotonic()
        revealed = analyst.detokenize(column.tokens, "CASE-6")
        elapsed = time.monotonic() - started
        assert [r.value for r in revealed if isinstance(r, Revealed)] == ips
        assert elapsed >= (600 - 150) / 200 * 0.9  # the rate was respected, not bypassed
        with pytest.raises(RateLimited) as raised:
            VaultClient.connect(
                limited_vault.address, stack_identity(stack_env, "analyst"), retry=RetryPolicy(max_rate_limit_wait=0)
            ).detokenize(column.tokens[:150], "CASE-6")
        assert raised.value.retry_after > 0


def test_ready_reports_a_serving_vault(client_for: ClientFor) -> None:
    client_for("etl-service").ready()
