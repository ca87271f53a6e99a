"""The ETL's key-less health endpoint: /healthz says ok, nothing else is served."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from devstack.procs import free_port
from etl_service.entrypoints.health import serve_health
from etl_service.errors import Misconfigured
from tests.unit.silent_connections import closed_by_server, threads_back_to
from tokenvault_common.bounded_server import IDLE_SECONDS, MAX_CONNECTIONS, BoundedThreads


def test_healthz_answers_ok_and_serves_no_metrics() -> None:
    port = free_port()
    server = serve_health(f"127.0.0.1:{port}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert (response.status, response.read()) == (200, b"ok\n")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("address", ["9102", "127.0.0.1:port"])
def test_an_address_that_is_not_host_port_stops_the_start(address: str) -> None:
    with pytest.raises(Misconfigured, match="ETL_HEALTH_ADDRESS must be host:port"):
        serve_health(address)


def _ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_address_is_served_over_ipv6() -> None:
    server = serve_health("[::1]:0")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=5) as response:
            assert (response.status, response.read()) == (200, b"ok\n")
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as connection:  # really over IPv6
            connection.connect(("::1", port))
            assert connection.getpeername()[0] == "::1"
    finally:
        server.shutdown()
        server.server_close()


def test_an_ipv6_address_without_brackets_stops_the_start_asking_for_them() -> None:
    """`::1:8086` could be the address ::1:8086 without a port: brackets say which part is the port."""
    with pytest.raises(Misconfigured, match=r"ETL_HEALTH_ADDRESS.*in brackets, e\.g\. \[::1\]:8086"):
        serve_health("::1:8086")


def _healthz_within(port: int, seconds: float) -> bool:
    """Whether GET /healthz answers "ok" within `seconds` (a refused connection is tried again)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.read() == b"ok\n")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    return False


def test_a_silent_connection_is_closed_by_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    idle_seconds = 1.0  # the server's bound here (IDLE_SECONDS, 5 s, in the service): the same code, sooner
    monkeypatch.setattr(BoundedThreads, "idle_seconds", idle_seconds)
    server = serve_health("127.0.0.1:0")
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as silent:
            started = time.monotonic()
            assert closed_by_server(silent, within=idle_seconds + 2)
            assert time.monotonic() - started < idle_seconds + 1.5
    finally:
        server.shutdown()
        server.server_close()


def test_silent_connections_cannot_pile_up_threads_and_the_probe_still_answers() -> None:
    server = serve_health("127.0.0.1:0")
    port = server.server_address[1]
    before = threading.active_count()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= MAX_CONNECTIONS
        refused = [connection for connection in silent if closed_by_server(connection, within=0.1)]
        assert len(refused) == 4  # those beyond the cap are closed at once, no thread started
        assert _healthz_within(port, IDLE_SECONDS + 1.5)  # once the silent ones time out
        assert threads_back_to(before, within=2.0)  # every silent connection's thread has ended
    finally:
        for connection in silent:
            connection.close()
        server.shutdown()
        server.server_close()
