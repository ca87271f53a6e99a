"""Vault (OpenBao) problems at start and during service, against real OpenBao and Postgres.

These tests run a private OpenBao and a private database, so they can seal and kill them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import hvac
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.conninfo import make_conninfo

from devstack.openbao import OpenBao, TransitSetup, configure_transit, start_openbao
from tests.conftest import client_channel, running_vault, stack_identity
from tests.integration.vault_start import start_service
from tokenvault_client import NO_RETRY, Revealed, TokenType, VaultClient
from tokenvault_common.migrations import migrate


@dataclass
class PrivateVault:
    """An OpenBao of its own, and a database of its own whose keys it wraps."""

    bao: OpenBao
    transit: TransitSetup
    overrides: dict[str, str]


@pytest.fixture
def private(stack_env: dict[str, str], tmp_path: Path) -> Iterator[PrivateVault]:
    bao = start_openbao(tmp_path / "openbao.log")
    try:
        transit = configure_transit(bao, tmp_path / "secrets")
        database = f"tv_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        migrate(make_conninfo(stack_env["PG_ADMIN_DSN"], dbname=database))
        overrides = {
            "TOKENVAULT_VAULT_ADDR": bao.address,
            "TOKENVAULT_VAULT_ROLE_ID": transit.role_id,
            "TOKENVAULT_VAULT_SECRET_ID_FILE": str(transit.secret_id_file),
            "TOKENVAULT_DATABASE_DSN": make_conninfo(stack_env["PG_VAULT_DSN"], dbname=database),
            "TOKENVAULT_KEY_CHECK_SECONDS": "1",
        }
        yield PrivateVault(bao, transit, overrides)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bao.pid, signal.SIGKILL)


def with_token(private: PrivateVault, token: str) -> dict[str, str]:
    """The private vault's settings, logging in with `token` instead of the AppRole."""
    return {
        **private.overrides,
        "TOKENVAULT_VAULT_ROLE_ID": "",
        "TOKENVAULT_VAULT_SECRET_ID_FILE": "",
        "TOKENVAULT_VAULT_TOKEN": token,
    }


def test_unreachable_vault_stops_the_start_with_a_clear_message(stack_env: dict[str, str]) -> None:
    result = start_service(stack_env, TOKENVAULT_VAULT_ADDR="http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach Vault at http://127.0.0.1:9" in result.stderr


def test_sealed_vault_stops_the_start_with_a_clear_message(stack_env: dict[str, str], private: PrivateVault) -> None:
    hvac.Client(url=private.bao.address, token=private.bao.root_token).sys.seal()
    result = start_service(stack_env, **private.overrides)
    assert result.returncode == 1
    assert "is sealed" in result.stderr


def test_missing_permission_is_named_at_start(stack_env: dict[str, str], private: PrivateVault) -> None:
    root = hvac.Client(url=private.bao.address, token=private.bao.root_token)
    root.sys.create_or_update_policy(
        "no-rewrap",
        'path "transit/datakey/plaintext/tokenvault" { capabilities = ["update"] }\n'
        'path "transit/decrypt/tokenvault" { capabilities = ["update"] }\n'
        'path "transit/keys/tokenvault" { capabilities = ["read"] }\n',
    )
    token = root.auth.token.create(policies=["no-rewrap"], ttl="1h")["auth"]["client_token"]
    result = start_service(stack_env, **with_token(private, token))
    assert result.returncode == 1
    assert "must allow update transit/rewrap/tokenvault" in result.stderr
    assert token not in result.stderr


def test_bad_credentials_stop_the_start(stack_env: dict[str, str], private: PrivateVault) -> None:
    result = start_service(stack_env, **with_token(private, "s.not-a-real-token"))
    assert result.returncode == 1
    assert "rejected the credentials" in result.stderr or "refused login" in result.stderr


def _health(channel: grpc.Channel, service: str) -> int:
    check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # the stubs omit it
    return int(check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_vault_outage_after_start_keeps_tokenization_going_and_shows_in_health(
    stack_env: dict[str, str], private: PrivateVault
) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with running_vault(stack_env, **private.overrides) as vault:
        channel = client_channel(stack_env, vault.address, "etl-service")
        etl = VaultClient(channel, retry=NO_RETRY, deadline=10)  # no retry: a refused call must show

        def tokenize(*values: str) -> list[str]:
            return [str(t) for t in etl.tokenize([(TokenType.IP, v) for v in values])]

        before = tokenize("192.0.2.1", "192.0.2.2")
        assert _health(channel, "tokenvault.dependency.vault") == serving

        os.kill(private.bao.pid, signal.SIGKILL)  # Vault gone
        deadline = time.monotonic() + 15
        while _health(channel, "tokenvault.dependency.vault") != not_serving:
            assert time.monotonic() < deadline, "health never reported the Vault outage"
            time.sleep(0.2)

        assert _health(channel, "") == serving  # degraded, still serving
        assert _health(channel, "tokenvault.v1.TokenVault") == serving
        assert tokenize("192.0.2.1", "192.0.2.2", "192.0.2.3")[:2] == before  # known and new values
        with VaultClient.connect(vault.address, stack_identity(stack_env, "analyst"), retry=NO_RETRY) as analyst:
            revealed = analyst.detokenize(before, purpose="outage")
        assert [r.value for r in revealed if isinstance(r, Revealed)] == ["192.0.2.1", "192.0.2.2"]
        channel.close()
