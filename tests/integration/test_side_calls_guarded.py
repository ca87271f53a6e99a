"""Health and reflection on the mTLS port go through the same door as TokenVault's methods (attack 19, finding 1).

Before, the guard let them through untouched: a revoked certificate opened reflection streams
that never sent a request, each holding one of the 16 workers, and every client's Tokenize and
reveal waited (58 s in the attack), with no audit row. Now a refused certificate is refused
there too (UNAUTHENTICATED, audited with its serial), and reflection streams are at most
SIDE_STREAMS_AT_ONCE at once for all clients together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack import certs
from tests.conftest import running_vault, stack_identity
from tests.integration.revocation_lists import authority, crl, reveals
from tokenvault_client import ClientIdentity, TokenType, VaultClient, open_channel
from vault_service.entrypoints.side_calls import SIDE_STREAMS_AT_ONCE

__all__ = ["authority", "crl"]

WORKERS = 16  # TOKENVAULT_WORKERS' default, which running_vault keeps


def _never_sends(held: threading.Event) -> Iterator[reflection_pb2.ServerReflectionRequest]:
    held.wait(10)  # bounded: on the code before the fix these streams held the workers until here
    yield from ()


def _reflection(channel: grpc.Channel) -> Any:
    """The reflection stub (its generated module has no type stubs)."""
    return reflection_pb2_grpc.ServerReflectionStub(channel)


def _refusals_of(stack_env: dict[str, str], serial: str, action: str) -> list[tuple[object, ...]]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        return conn.execute(
            "SELECT client, outcome FROM vault.audit_log WHERE client_serial = %s AND action = %s",
            (serial, action),
        ).fetchall()


def test_a_revoked_certificate_gets_no_health_or_reflection_and_idle_streams_hold_no_workers(
    stack_env: dict[str, str], authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    revoked = certs.issue(authority, tmp_path, "analyst")
    serial = x509.load_pem_x509_certificate(revoked.cert.read_bytes()).serial_number
    certs.write_revocation_list(authority, [serial], crl)
    held = threading.Event()
    with running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as vault:
        with VaultClient.connect(vault.address, stack_identity(stack_env, "etl-service")) as etl:
            (token,) = etl.tokenize([(TokenType.IP, "198.51.100.79")])

        # The revoked certificate: refused on both side services, before any request is read.
        with open_channel(
            vault.address, ClientIdentity(authority.cert_path, revoked.cert, revoked.key, "localhost")
        ) as ch:
            stream = _reflection(ch).ServerReflectionInfo(_never_sends(held))
            try:
                next(stream, None)
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in str(refused.details())
            else:
                pytest.fail("a revoked certificate's reflection stream was served")
            check = health_pb2_grpc.HealthStub(ch).Check  # type: ignore[attr-defined]  # stubs omit it
            try:
                check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                pytest.fail("a revoked certificate's health check was answered")
        hex_serial = format(serial, "x")
        assert ("<anonymous>", "refused: Unauthenticated") in _refusals_of(stack_env, hex_serial, "serverreflection")
        assert ("<anonymous>", "refused: Unauthenticated") in _refusals_of(stack_env, hex_serial, "health")

        # Valid certificates of two clients open a worker's worth of idle reflection streams each.
        channels = [
            open_channel(vault.address, stack_identity(stack_env, name)) for name in ("analyst", "fraud-investigator")
        ]
        streams = [
            _reflection(channel).ServerReflectionInfo(_never_sends(held))
            for channel in channels
            for _ in range(WORKERS // 2)
        ]
        try:
            time.sleep(1)
            open_streams = [s for s in streams if not s.done()]
            codes = [s.code() for s in streams if s.done()]
            assert len(open_streams) <= SIDE_STREAMS_AT_ONCE, f"{len(open_streams)} idle reflection streams open"
            assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            started = time.monotonic()
            assert reveals(vault, stack_identity(stack_env, "analyst"), str(token))
            assert time.monotonic() - started < 3, "an honest reveal waited for a worker"
        finally:
            held.set()
            for stream in streams:
                stream.cancel()
            for channel in channels:
                channel.close()

        # Reflection still works for a client that asks and closes (grpcurl describe).
        with open_channel(vault.address, stack_identity(stack_env, "analyst")) as ch:
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            (answer,) = _reflection(ch).ServerReflectionInfo(iter([request]))
            assert "tokenvault.v1.TokenVault" in {s.name for s in answer.list_services_response.service}
