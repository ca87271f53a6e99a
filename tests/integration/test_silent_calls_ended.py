"""A call must deliver its request within the read bound, and a name outside the policy is refused at the door.

Attack 20: two valid certificates' silent calls (health Check, a TokenVault method) held every
worker until their connections' maximum age, with no audit row (finding 3); a client-CA
certificate for a name the policy does not know was admitted with a share of its own and waited
for (finding 2); two silent Check calls froze the plaintext health listener Kubernetes probes
(finding 1). Now a call that sends nothing is ended after TOKENVAULT_REQUEST_READ_SECONDS and
audited with its certificate's serial, an unknown name gets UNAUTHENTICATED before its request is
read, and the health listener ends silent calls the same way, so probes still answer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from devstack import certs
from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.revocation_lists import authority
from tokenvault_client import NO_RETRY, ClientIdentity, TokenType, VaultClient, open_channel
from vault_service.entrypoints.health_listener import HEALTH_STREAMS_PER_CONNECTION, create_health_server
from vault_service.entrypoints.server import LIVENESS_SERVICE, RESERVED_WORKERS

__all__ = ["authority"]

READ_SECONDS = 1.0
SHARE = 4  # running_vault's: half of its 8 workers
CHECK = "/grpc.health.v1.Health/Check"
DETOKENIZE = "/tokenvault.v1.TokenVault/Detokenize"
TOKENIZE = "/tokenvault.v1.TokenVault/Tokenize"
SILENT_ON_THE_LISTENER = 20  # the 2 that froze it, and more than a thread pool of its size would hold
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
"""gRPC shares one connection between channels to a target; the kubelet, another process, has its own."""
REOPENED_PER_CERTIFICATE = 16  # review 21, R21-4: two of them filled gRPC's 32 call slots with held and queued calls


@pytest.fixture(scope="module")
def bounded_vault(stack_env: dict[str, str]) -> Iterator[RunningVault]:
    """A vault that ends calls which send no request within READ_SECONDS."""
    with running_vault(stack_env, TOKENVAULT_REQUEST_READ_SECONDS=str(READ_SECONDS)) as vault:
        yield vault


@pytest.fixture
def held() -> Iterator[threading.Event]:
    """Set when the test lets its silent calls go (on the code before the fix they held workers until then)."""
    event = threading.Event()
    yield event
    event.set()


def _silent_calls(channel: grpc.Channel, method: str, count: int, held: threading.Event) -> list[Any]:
    """`count` calls of `method` that never send their request."""

    def never_sends() -> Iterator[bytes]:
        held.wait(15)
        yield from ()

    call = channel.stream_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return [call(never_sends()) for _ in range(count)]


def _all_done(calls: list[Any], within: float) -> bool:
    deadline = time.monotonic() + within
    while not all(c.done() for c in calls) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(c.done() for c in calls)


def _person(authority: certs.Authority, tmp_path: Path, name: str) -> tuple[ClientIdentity, str]:
    """A certificate of the client CA for `name`, and its serial as the audit log keeps it."""
    issued = certs.issue(authority, tmp_path / name, name)
    serial = x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number
    return ClientIdentity(authority.cert_path, issued.cert, issued.key, "localhost"), format(serial, "x")


def _outcomes(stack_env: dict[str, str], serial: str) -> set[tuple[str, str]]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT action, outcome FROM vault.audit_log WHERE client_serial = %s", (serial,))
        return {(action, outcome) for action, outcome in rows.fetchall()}


def _audited(stack_env: dict[str, str], serial: str, expected: tuple[str, str], within: float = 5.0) -> bool:
    """Whether `expected` (action, outcome) is among the serial's audit rows within `within` seconds.

    A call is ended before its refusal row is written: on a loaded machine the client sees CANCELLED first.
    """
    deadline = time.monotonic() + within
    while expected not in _outcomes(stack_env, serial):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_silent_calls_of_valid_certificates_are_ended_and_audited_by_serial(
    stack_env: dict[str, str], bounded_vault: RunningVault, authority: certs.Authority, tmp_path: Path, held: Any
) -> None:
    (analyst, analyst_serial), (investigator, investigator_serial) = (
        _person(authority, tmp_path, name) for name in ("analyst", "fraud-investigator")
    )
    with open_channel(bounded_vault.address, analyst) as a, open_channel(bounded_vault.address, investigator) as b:
        calls = _silent_calls(a, CHECK, SHARE, held) + _silent_calls(b, DETOKENIZE, SHARE, held)  # one per worker
        time.sleep(0.3)
        with VaultClient.connect(bounded_vault.address, stack_identity(stack_env, "etl-service")) as etl:
            started = time.monotonic()
            etl.tokenize([(TokenType.IP, "198.51.100.92")])
            assert time.monotonic() - started < READ_SECONDS * 1.25 + 1, "an honest call waited past the read bound"
        assert _all_done(calls, READ_SECONDS * 1.25 + 1), "a silent call outlived the read bound"
    codes = Counter(c.code() for c in calls)  # all workers but RESERVED_WORKERS may wait: the rest are refused
    assert set(codes) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes[grpc.StatusCode.CANCELLED] >= 2 * SHARE - RESERVED_WORKERS, codes
    assert _audited(stack_env, analyst_serial, ("health", "refused: RequestNotSent")), _outcomes(
        stack_env, analyst_serial
    )
    assert _audited(stack_env, investigator_serial, ("detokenize", "refused: RequestNotSent")), _outcomes(
        stack_env, investigator_serial
    )


def _reopening(channel: grpc.Channel, method: str, stop: threading.Event) -> None:
    """Keep one silent call of `method` open until `stop`, opening a new one as soon as one is ended or refused."""

    def never_sends() -> Iterator[bytes]:
        stop.wait(15)
        yield from ()

    call = channel.stream_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    while not stop.is_set():
        try:
            for _ in call(never_sends(), timeout=15):
                pass
        except grpc.RpcError:
            pass


def test_reopened_silent_calls_of_two_certificates_leave_honest_calls_served(
    stack_env: dict[str, str], bounded_vault: RunningVault, authority: certs.Authority, tmp_path: Path
) -> None:
    """Silent calls re-opened as they end hold at most all workers but two; queued ones are refused, not honest calls.

    Review 21, R21-4: gRPC counted the queued silent calls in its 32 call slots, so every ETL call was
    refused "Concurrent RPC limit exceeded!" before any Python ran, for as long as the certificates were valid.
    """
    (analyst, _), (investigator, _) = (_person(authority, tmp_path, name) for name in ("analyst", "fraud-investigator"))
    stop = threading.Event()
    with open_channel(bounded_vault.address, analyst) as a, open_channel(bounded_vault.address, investigator) as b:
        attackers = [
            threading.Thread(target=_reopening, args=(channel, method, stop), daemon=True)
            for channel, method in ((a, CHECK), (b, DETOKENIZE))
            for _ in range(REOPENED_PER_CERTIFICATE)
        ]
        try:
            for attacker in attackers:
                attacker.start()
            time.sleep(0.5)
            seconds: list[float | str] = []  # per try: how long it took to answer, or why it failed
            with VaultClient.connect(
                bounded_vault.address, stack_identity(stack_env, "etl-service"), retry=NO_RETRY
            ) as etl:
                for attempt in range(10):
                    started = time.monotonic()
                    try:
                        etl.tokenize([(TokenType.IP, f"198.51.100.{110 + attempt}")])
                        seconds.append(round(time.monotonic() - started, 2))
                    except Exception as failed:  # refused or failed: not answered
                        seconds.append(f"{type(failed).__name__}: {str(failed)[:120]}")
                    time.sleep(0.1)
        finally:
            stop.set()
            for attacker in attackers:
                attacker.join(timeout=5)
    in_time = [s for s in seconds if isinstance(s, float) and s < READ_SECONDS + 1]
    assert len(in_time) >= 9, f"the ETL's Tokenize, 10 tries: {seconds}"


def test_a_name_outside_the_policy_is_refused_before_its_request_is_read(
    stack_env: dict[str, str], bounded_vault: RunningVault, authority: certs.Authority, tmp_path: Path, held: Any
) -> None:
    strangers = [_person(authority, tmp_path, name) for name in ("stranger-one", "stranger-two")]
    channels = [open_channel(bounded_vault.address, identity) for identity, _ in strangers]
    try:
        calls = [call for ch in channels for call in _silent_calls(ch, TOKENIZE, SHARE, held)]
        assert _all_done(calls, READ_SECONDS / 2), "a name outside the policy was admitted and waited for"
    finally:
        for channel in channels:
            channel.close()
    assert {c.code() for c in calls} == {grpc.StatusCode.UNAUTHENTICATED}
    assert "unknown to the vault policy" in calls[0].details()
    for _, serial in strangers:
        assert _audited(stack_env, serial, ("tokenize", "refused: Unauthenticated"))
        assert _outcomes(stack_env, serial) == {("tokenize", "refused: Unauthenticated")}


def test_silent_calls_do_not_freeze_the_health_listener(bounded_vault: RunningVault, held: Any) -> None:
    server, port = create_health_server(bounded_vault.server.health, "127.0.0.1:0", READ_SECONDS)
    server.start()
    per_connection = HEALTH_STREAMS_PER_CONNECTION  # the listener takes no more at once on one connection
    attackers = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[OWN_CONNECTION])
        for _ in range(SILENT_ON_THE_LISTENER // per_connection)
    ]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[OWN_CONNECTION]) as kubelet:  # as a probe's
            calls = [call for attacker in attackers for call in _silent_calls(attacker, CHECK, per_connection, held)]
            time.sleep(0.3)
            check = health_pb2_grpc.HealthStub(kubelet).Check  # type: ignore[attr-defined]  # stubs omit it
            for service in ("", LIVENESS_SERVICE):  # readiness, liveness: answered at once, not after the bound
                answer = check(health_pb2.HealthCheckRequest(service=service), timeout=READ_SECONDS / 2)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            assert _all_done(calls, READ_SECONDS * 1.25 + 1), "a silent call outlived the read bound"
            watch = health_pb2_grpc.HealthStub(kubelet).Watch  # type: ignore[attr-defined]
            with pytest.raises(grpc.RpcError) as refused:
                next(watch(health_pb2.HealthCheckRequest(service=""), timeout=3))
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # a stream would hold a worker
    finally:
        for attacker in attackers:
            attacker.close()
        server.stop(0).wait()


def _refused_for_room(client: str, method: str) -> float:
    """tokenvault_calls_without_room_to_wait_total{client,method} of this process (the vault runs in it)."""
    value = REGISTRY.get_sample_value(
        "tokenvault_calls_without_room_to_wait_total", {"client": client, "method": method}
    )
    return value or 0.0


def test_calls_refused_for_want_of_room_to_wait_are_counted_by_client(
    bounded_vault: RunningVault, authority: certs.Authority, tmp_path: Path, held: Any
) -> None:
    """Two clients with as many silent calls waiting each fill the room; the next call of either is refused, counted.

    Such refusals were audited but had no metric of their own (closing note, admission).
    """
    (analyst, _), (investigator, _) = (_person(authority, tmp_path, name) for name in ("analyst", "fraud-investigator"))
    waiting = (SHARE * 2 - RESERVED_WORKERS) // 2  # each client's half of the room (running_vault's 8 workers)
    before = _refused_for_room("analyst", "health"), _refused_for_room("fraud-investigator", "detokenize")
    with open_channel(bounded_vault.address, analyst) as a, open_channel(bounded_vault.address, investigator) as b:
        calls = _silent_calls(a, CHECK, waiting, held) + _silent_calls(b, DETOKENIZE, waiting, held)
        time.sleep(0.3)  # all waiting for their request (they are ended after READ_SECONDS)
        refused = _silent_calls(a, CHECK, 1, held) + _silent_calls(b, DETOKENIZE, 1, held)
        assert _all_done(refused, READ_SECONDS / 2), "a call found room to wait"
        assert _all_done(calls, READ_SECONDS * 1.25 + 1)
    assert [c.code() for c in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, [c.details() for c in refused]
    after = _refused_for_room("analyst", "health"), _refused_for_room("fraud-investigator", "detokenize")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
