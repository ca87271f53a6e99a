"""Refusals of a certificate the vault refuses itself are throttled by the name it carries, not by the peer's address.

Attack 45 (A45-5): a certificate of the client CA that the vault refuses after the TLS handshake - revoked (the
CRL is the vault's check), expired on a connection opened before (TLS checks the dates once) - was "unverified",
and its audited refusals were throttled by the peer's address; the caller chooses it: any local process binds
any 127.0.0.0/8 address before it connects (an IPv6 prefix or a NAT pool likewise). A revoked certificate from 6
addresses wrote 300 audited refusal rows in 1.2 s (one peer's bound 57); the ETL, which issues itself
`etl-service` certificates at will, did the same with one at the end of its life. Now such a refusal is throttled
by the certificate's client name ("refused <name>", apart from the verified client's own bucket), however many
addresses it comes from: one burst, then 5 a second, for all of them together.

Each test runs a vault of its own (the throttle is per process); the calls reach it through local relays whose
connections leave from 127.0.0.2..7, as a process bound to those addresses would.
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import grpc
import psycopg
from cryptography import x509

from devstack import certs
from tests.conftest import running_vault
from tests.integration.revocation_lists import authority, crl
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import ClientIdentity, open_channel
from vault_service.service.metering import REFUSALS_AUDITED_PER_PEER

__all__ = ["authority", "crl"]

ADDRESSES = 6
CALLS = 60
"""Calls per address: more than one peer's burst (50), so each address alone would be throttled."""


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextmanager
def _from_address(source: str, port: int) -> Iterator[str]:
    """A local relay whose connections reach the vault's `port` from address `source` (bound before connecting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    opened: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
            opened.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(2)
        for s in opened:
            with suppress(OSError):
                s.close()


def _reveal(stub: vault_pb2_grpc.TokenVaultStub, purpose: str) -> grpc.StatusCode:
    try:
        stub.Detokenize(vault_pb2.DetokenizeRequest(purpose=purpose, tokens=["ip_x"]), timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _refusal_rows(admin: psycopg.Connection, after: int, serial: str) -> int:
    (rows,) = admin.execute(  # type: ignore[misc]
        "SELECT count(*) FROM vault.audit_log WHERE id > %s AND client_serial = %s AND outcome LIKE 'refused:%%'",
        (after, serial),
    ).fetchone()
    return int(rows)


def _bound(elapsed: float) -> float:
    """What one peer may have audited in `elapsed` seconds: its burst, its rate, and one for the clock's edge."""
    limit = REFUSALS_AUDITED_PER_PEER
    return limit.burst + limit.per_second * elapsed + 1


def test_a_revoked_certificate_from_many_loopback_addresses_is_audited_within_its_names_one_bound(
    stack_env: dict[str, str], authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    revoked = certs.issue(authority, tmp_path / "revoked", "analyst")
    current = certs.issue(authority, tmp_path / "current", "analyst")  # the analyst's own, not revoked
    serial = x509.load_pem_x509_certificate(revoked.cert.read_bytes()).serial_number
    certs.write_revocation_list(authority, [serial], crl)
    identity = ClientIdentity(authority.cert_path, revoked.cert, revoked.key, "localhost")
    with (
        running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as vault,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        (before,) = admin.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()  # type: ignore[misc]
        port = int(vault.address.rsplit(":", 1)[1])
        started = time.monotonic()
        codes: list[grpc.StatusCode] = []
        for n in range(2, 2 + ADDRESSES):
            with _from_address(f"127.0.0.{n}", port) as relay, open_channel(relay, identity) as channel:
                stub = vault_pb2_grpc.TokenVaultStub(channel)
                codes += [_reveal(stub, "INC-4545") for _ in range(CALLS)]
        elapsed = time.monotonic() - started
        rows = _refusal_rows(admin, before, format(serial, "x"))
        # The analyst's own certificate keeps its own refusal budget: an empty call is refused for what it is
        # (INVALID_ARGUMENT, audited), not RESOURCE_EXHAUSTED for the revoked copy's refusals.
        own = ClientIdentity(authority.cert_path, current.cert, current.key, "localhost")
        with open_channel(vault.address, own) as channel:
            try:
                vault_pb2_grpc.TokenVaultStub(channel).Detokenize(
                    vault_pb2.DetokenizeRequest(purpose="INC-4545"), timeout=5
                )
                own_code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                own_code = error.code()
    bound = _bound(elapsed)
    print(
        f"{rows} audited refusal rows of one revoked certificate from {ADDRESSES} loopback addresses,"
        f" {len(codes)} calls in {elapsed:.1f} s (one name's bound {bound:.0f});"
        f" UNAUTHENTICATED {codes.count(grpc.StatusCode.UNAUTHENTICATED)},"
        f" RESOURCE_EXHAUSTED {codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)}"
    )
    assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
    assert REFUSALS_AUDITED_PER_PEER.burst <= rows <= bound, (rows, bound)
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == rows  # each refusal written is one answered as such
    assert own_code is grpc.StatusCode.INVALID_ARGUMENT, own_code


def test_an_etl_certificate_expired_on_connections_from_many_addresses_is_audited_within_its_names_one_bound(
    stack_env: dict[str, str], authority: certs.Authority, tmp_path: Path
) -> None:
    """The ETL's agent issues itself `etl-service` certificates at will (A40-1), so one is always near its end: it
    connects from many addresses while the certificate is valid (TLS checks the dates once) and keeps the
    connections; once it has expired each call is refused UNAUTHENTICATED ('expired') by the vault's per-call
    check (attack 18) - throttled by the name `etl-service`, not once per address. The test's 6-second
    certificate stands for one at the end of its 72 h: issued once the vault is up (review 40, R40-7: issued before
    its start, a loaded machine left 2 of its 3 s for the connections), valid 6 s."""
    with (
        running_vault(stack_env) as vault,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
        ExitStack() as stack,
    ):
        short = certs.issue(authority, tmp_path, "etl-service", validity=datetime.timedelta(seconds=6))
        identity = ClientIdentity(authority.cert_path, short.cert, short.key, "localhost")
        leaf = x509.load_pem_x509_certificate(short.cert.read_bytes())
        expires, serial = leaf.not_valid_after_utc.timestamp(), format(leaf.serial_number, "x")
        (before,) = admin.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()  # type: ignore[misc]
        port = int(vault.address.rsplit(":", 1)[1])
        stubs = []
        for n in range(2, 2 + ADDRESSES):  # connected while the certificate is valid
            relay = stack.enter_context(_from_address(f"127.0.0.{n}", port))
            stub = vault_pb2_grpc.TokenVaultStub(stack.enter_context(open_channel(relay, identity)))
            stub.Tokenize(
                vault_pb2.TokenizeRequest(
                    items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value="192.0.2.7")]
                ),
                timeout=5,
            )
            stubs.append(stub)
        time.sleep(max(0.0, expires - time.time()) + 0.5)
        started = time.monotonic()
        codes = [_reveal(stub, "INC-4546") for stub in stubs for _ in range(CALLS)]
        elapsed = time.monotonic() - started
        rows = _refusal_rows(admin, before, serial)
    bound = _bound(elapsed)
    print(
        f"{rows} audited refusal rows of one expired etl-service certificate from {ADDRESSES} addresses,"
        f" {len(codes)} calls in {elapsed:.1f} s (one name's bound {bound:.0f});"
        f" UNAUTHENTICATED {codes.count(grpc.StatusCode.UNAUTHENTICATED)},"
        f" RESOURCE_EXHAUSTED {codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)}"
    )
    assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
    assert REFUSALS_AUDITED_PER_PEER.burst <= rows <= bound, (rows, bound)
