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
    while not _audited(stack_env, "outcome LIKE %s", f"%{side_calls.STREAMS_PER_CLIENT_REASON}%"):  # 1 each
        assert time.monotonic() < deadline, "refused side streams were not counted in the audit log"
        time.sleep(0.5)


def _list_services() -> Iterator[Any]:
    yield reflection_pb2.ServerReflectionRequest(list_services="")


def _keeps_reflection_open(channel: grpc.Channel, stop: threading.Event, answered: threading.Event) -> None:
    """Reflection streams that ask ListServices and stay open, one re-opened as soon as the last ends, until `stop`.

    `answered` is set once a stream of these has had its answer (it is open and holds a slot).
    """

    def asks_then_waits() -> Iterator[Any]:
        yield from _list_services()
        stop.wait()

    while not stop.is_set():
        try:
            for _ in _reflection(channel).ServerReflectionInfo(asks_then_waits(), timeout=10):
                answered.set()
        except grpc.RpcError:
            time.sleep(0.05)  # refused: at once again, as the attack did


def _services(channel: grpc.Channel) -> set[str] | str:
    """The services reflection lists to `channel`'s client (buf curl's first step), or the refusal's status."""
    try:
        (answer,) = _reflection(channel).ServerReflectionInfo(_list_services(), timeout=2)
    except grpc.RpcError as refused:
        return f"{refused.code().name}: {refused.details()}"
    return {service.name for service in answer.list_services_response.service}


def test_one_certificate_keeps_no_other_clients_reflection_out(stack_env: dict[str, str], vault: Any) -> None:
    """Attack 22, F5: one certificate re-opening 2 reflection streams held both slots; all others were refused."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        (before,) = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone() or (0,)
    channels = {
        name: open_channel(vault.address, stack_identity(stack_env, name))
        for name in ("etl-service", "fraud-investigator", "analyst")
    }
    hogs_stop, hog_answered, holders_stop = threading.Event(), threading.Event(), threading.Event()
    hogs = [
        threading.Thread(
            target=_keeps_reflection_open, args=(channels["etl-service"], hogs_stop, hog_answered), daemon=True
        )
        for _ in range(side_calls.SIDE_STREAMS_AT_ONCE)
    ]
    try:
        for hog in hogs:
            hog.start()
        assert hog_answered.wait(timeout=5), "the certificate's reflection stream was never answered"
        time.sleep(0.1)  # its second stream asked too (refused, or - a fix broken - holding the other slot)
        answers = []
        until = time.monotonic() + 2.4
        while time.monotonic() < until:
            answers.append(_services(channels["analyst"]))
            time.sleep(0.2)
        assert all(isinstance(a, set) and "tokenvault.v1.TokenVault" in a for a in answers), answers
        hogs_stop.set()
        for hog in hogs:
            hog.join(timeout=5)
        # two other clients holding the slots: the refused one is told they are held, not by whom
        holding = {name: threading.Event() for name in ("etl-service", "fraud-investigator")}
        holders = [
            threading.Thread(target=_keeps_reflection_open, args=(channels[name], holders_stop, held), daemon=True)
            for name, held in holding.items()
        ]
        for holder in holders:
            holder.start()
        assert all(held.wait(timeout=5) for held in holding.values()), "a holder's stream was never answered"
        refused = _services(channels["analyst"])
        assert isinstance(refused, str) and refused.startswith("RESOURCE_EXHAUSTED")
        assert "held by 2 other client(s)" in refused and "etl-service" not in refused, refused
        holders_stop.set()
        for holder in holders:
            holder.join(timeout=5)
    finally:
        hogs_stop.set()
        holders_stop.set()
        for channel in channels.values():
            channel.close()
    per_client = ("etl-service", "serverreflection", side_calls.STREAMS_PER_CLIENT_REASON)
    holder_names = "etl-service, fraud-investigator"
    held = ("analyst", "serverreflection", f"{side_calls.STREAMS_AT_ONCE_REASON}, held by {holder_names}")
    deadline = time.monotonic() + 10  # counted refusals are written at the next upkeep round
    while True:
        rows = _audited(stack_env, "id > %s", before)
        reasons = {(client, action, str(outcome).split(" ", 2)[-1]) for client, action, outcome in rows}
        if {per_client, held} <= reasons:
            break
        assert time.monotonic() < deadline, f"the refusals were not counted in the audit log: {reasons}"
        time.sleep(0.5)
