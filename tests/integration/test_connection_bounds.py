"""Connections to the mTLS port: a handshake within a bound, and at most STREAMS_PER_CONNECTION calls on one.

Attack 21, F5: 20,000 TCP connections that never sent a TLS ClientHello held the vault's file
descriptors for gRPC core's default 120 s each, and a fresh ETL channel got DEADLINE_EXCEEDED. Now
core closes a connection that has not finished its handshake within TOKENVAULT_HANDSHAKE_SECONDS.
The closing note's admission item: the mTLS server had no per-connection stream limit, so one
connection of an insider holding the ETL's certificate could open as many calls as the whole door.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration import raw_http2 as h2
from tokenvault_client import TokenType, VaultClient
from vault_service.entrypoints.server import STREAMS_PER_CONNECTION

HANDSHAKE_SECONDS = 1.0
CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture(scope="module")
def quick_handshake_vault(stack_env: dict[str, str]) -> Iterator[RunningVault]:
    """A vault that closes connections which have not finished their handshake within HANDSHAKE_SECONDS."""
    with running_vault(stack_env, TOKENVAULT_HANDSHAKE_SECONDS=str(HANDSHAKE_SECONDS)) as vault:
        yield vault


def _port(vault: RunningVault) -> int:
    return int(vault.address.rsplit(":", 1)[1])


def _seconds_until_closed(sock: socket.socket, within: float) -> float | None:
    """Seconds until the peer closes `sock` (EOF or reset), None if it is still open after `within`."""
    started = time.monotonic()
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - started


def _tokenize_once(stack_env: dict[str, str], vault: RunningVault) -> None:
    with VaultClient.connect(vault.address, stack_identity(stack_env, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, "198.51.100.131")])
        assert token


def test_a_connection_that_never_handshakes_is_closed_within_the_bound(
    stack_env: dict[str, str], quick_handshake_vault: RunningVault
) -> None:
    silent = [socket.create_connection(("127.0.0.1", _port(quick_handshake_vault))) for _ in range(20)]
    try:
        _tokenize_once(stack_env, quick_handshake_vault)  # an honest client meanwhile
        closed_after = [_seconds_until_closed(sock, HANDSHAKE_SECONDS + 2) for sock in silent]
    finally:
        for sock in silent:
            sock.close()
    assert all(s is not None and s <= HANDSHAKE_SECONDS + 1 for s in closed_after), closed_after


def test_a_client_opening_more_streams_than_the_limit_is_refused_while_others_are_served(
    stack_env: dict[str, str], quick_handshake_vault: RunningVault
) -> None:
    """gRPC's clients queue calls over the advertised limit; one that opens them anyway is refused."""
    directory = Path(stack_env["STACK_DIR"]) / "certs"
    with h2.tls_connection(
        _port(quick_handshake_vault),
        directory / "ca.pem",
        directory / "etl-service.pem",
        directory / "etl-service-key.pem",
    ) as conn:
        conn.sendall(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
        frames = h2.FrameReader(conn)
        advertised = None
        while advertised is None:
            got = frames.next()
            assert got is not None, "closed before its SETTINGS"
            kind, flags, _, payload = got
            if kind == h2.SETTINGS and not flags & h2.ACK:
                advertised = h2.settings_of(payload)
        conn.sendall(h2.frame(h2.SETTINGS, h2.ACK, 0) + h2.frame(h2.PING, 0, 0, b"settled!"))
        while (got := frames.next()) is not None and not (got[0] == h2.PING and got[1] & h2.ACK):
            pass  # the server has read our ACK of its SETTINGS: its limit is in force
        headers = h2.literal_headers(
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", CHECK),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        opened = STREAMS_PER_CONNECTION + 16
        conn.sendall(b"".join(h2.frame(h2.HEADERS, h2.END_HEADERS, 2 * n + 1, headers) for n in range(opened)))
        refused = False
        deadline = time.monotonic() + 3
        conn.settimeout(0.5)
        while not refused and time.monotonic() < deadline:
            try:
                got = frames.next()
            except TimeoutError:
                continue
            if got is None:
                refused = True  # the connection was closed
                break
            kind, _, _, payload = got
            refused = kind == h2.GOAWAY or (
                kind == h2.RST_STREAM and int.from_bytes(payload, "big") == h2.REFUSED_STREAM
            )
        with VaultClient.connect(quick_handshake_vault.address, stack_identity(stack_env, "analyst")) as analyst:
            started = time.monotonic()
            analyst.ready(timeout=5)  # another client is served meanwhile, at once
            assert time.monotonic() - started < 1
    assert advertised.get(h2.MAX_CONCURRENT_STREAMS) == STREAMS_PER_CONNECTION, advertised
    assert refused, f"{opened} streams opened at once on one connection were all taken"
