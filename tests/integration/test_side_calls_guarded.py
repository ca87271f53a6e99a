"""Health and reflection on the mTLS port go through the same door as TokenVault's methods.

Attack 19, finding 1: the guard let them through untouched, so a revoked certificate opened
reflection streams that never sent a request, each holding one of the workers, and every
client's Tokenize and reveal waited (58 s in the attack), with no audit row. Review 20, R20-1:
health's Check, List and Watch then still read their one request on a worker before the check
ran. R20-3: the streams allowed stayed open for ever. Now every side call is admitted before its
request is read (a refused certificate gets UNAUTHENTICATED, audited with its serial), and
streams are at most SIDE_STREAMS_AT_ONCE at once, each ended after SIDE_STREAM_SECONDS.
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
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack import certs
from tests.conftest import running_vault, stack_identity
from tests.integration.revocation_lists import authority, crl, reveals
from tokenvault_client import ClientIdentity, TokenType, VaultClient, open_channel
from vault_service.entrypoints import side_calls

__all__ = ["authority", "crl"]

WORKERS = 8  # running_vault's
SIDE_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/List",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


def _never_sends(held: threading.Event) -> Iterator[bytes]:
    held.wait(10)  # bounded: on the code before the fix these calls held the workers until here
    yield from ()


def _idle_calls(channel: grpc.Channel, method: str, count: int, held: threading.Event) -> list[Any]:
    """`count` calls of `method` that never send their request (any client can open them so)."""
    call = channel.stream_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return [call(_never_sends(held)) for _ in range(count)]


def _reflection(channel: grpc.Channel) -> Any:
    """The reflection stub (its generated module has no type stubs)."""
    return reflection_pb2_grpc.ServerReflectionStub(channel)


def _audited(stack_env: dict[str, str], where: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        return conn.execute(f"SELECT client, action, outcome FROM vault.audit_log WHERE {where}", args).fetchall()


def _honest_tokenize_answers_at_once(vault: Any, stack_env: dict[str, str]) -> None:
    with VaultClient.connect(vault.address, stack_identity(stack_env, "etl-service")) as etl:
        started = time.monotonic()
        etl.tokenize([(TokenType.IP, "198.51.100.80")])
        assert time.monotonic() - started < 3, "an honest call waited for a worker"


def test_a_revoked_certificate_gets_no_side_call_and_holds_no_worker(
    stack_env: dict[str, str], authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    revoked = certs.issue(authority, tmp_path, "analyst")
    serial = x509.load_pem_x509_certificate(revoked.cert.read_bytes()).serial_number
    certs.write_revocation_list(authority, [serial], crl)
    held = threading.Event()
    identity = ClientIdentity(authority.cert_path, revoked.cert, revoked.key, "localhost")
    with (
        running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as vault,
        open_channel(vault.address, identity) as ch,
    ):
        calls = {method: _idle_calls(ch, method, WORKERS, held) for method in SIDE_METHODS}
        try:
            time.sleep(1)
            for method, made in calls.items():
                assert all(c.done() for c in made), f"{method}: a revoked certificate's silent call is held open"
                assert {c.code() for c in made} == {grpc.StatusCode.UNAUTHENTICATED}, method
            _honest_tokenize_answers_at_once(vault, stack_env)
        finally:
            held.set()
    refused = _audited(stack_env, "client_serial = %s", format(serial, "x"))
    assert {("<anonymous>", action, "refused: Unauthenticated") for action in ("health", "serverreflection")} <= set(
        refused
    )


def test_streams_are_few_at_once_and_ended_by_the_server(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(side_calls, "SIDE_STREAM_SECONDS", 3.0)
    held = threading.Event()
    with running_vault(stack_env) as vault:
        with VaultClient.connect(vault.address, stack_identity(stack_env, "etl-service")) as etl:
            token = str(etl.tokenize([(TokenType.IP, "198.51.100.81")])[0])
        channels = [
            open_channel(vault.address, stack_identity(stack_env, name)) for name in ("analyst", "fraud-investigator")
        ]
        streams = [
            stream
            for channel, method in zip(channels, SIDE_METHODS[2:], strict=True)  # Watch, reflection
            for stream in _idle_calls(channel, method, WORKERS // 2, held)
        ]
        try:
            time.sleep(1)
            open_streams = [s for s in streams if not s.done()]
            assert len(open_streams) <= side_calls.SIDE_STREAMS_AT_ONCE, f"{len(open_streams)} idle streams open"
            assert {s.code() for s in streams if s.done()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            started = time.monotonic()
            assert reveals(vault, stack_identity(stack_env, "analyst"), token)
            assert time.monotonic() - started < 3, "an honest reveal waited for a worker"
            time.sleep(3)  # past SIDE_STREAM_SECONDS: the server ended the streams it held
            assert all(s.done() for s in streams), "a side stream outlived its bound"
            request = reflection_pb2.ServerReflectionRequest(list_services="")  # and describe works again
            (answer,) = _reflection(channels[1]).ServerReflectionInfo(iter([request]))
            assert "tokenvault.v1.TokenVault" in {s.name for s in answer.list_services_response.service}
        finally:
            held.set()
            for channel in channels:
                channel.close()
    deadline = time.monotonic() + 10  # counted refusals are written at the next upkeep round
    while not _audited(stack_env, "outcome LIKE %s", f"%{side_calls.STREAMS_AT_ONCE_REASON}%"):
        assert time.monotonic() < deadline, "refused side streams were not counted in the audit log"
        time.sleep(0.5)
