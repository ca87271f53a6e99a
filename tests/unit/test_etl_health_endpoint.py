"""The ETL's key-less health endpoint: /healthz says ok, nothing else is served."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.procs import free_port
from etl_service.entrypoints import health
from etl_service.entrypoints.health import REQUEST_SECONDS, serve_health
from etl_service.errors import Misconfigured
from tests.unit.silent_connections import closed_by_server, threads_back_to
from tokenvault_common.bounded_server import MAX_CONNECTIONS, BoundedThreads


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
    request_seconds = 1.0  # the handler's bound here (REQUEST_SECONDS, 2 s, in the service): the same code, sooner
    monkeypatch.setattr(health._Handler, "request_seconds", request_seconds)
    server = serve_health("127.0.0.1:0")
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as silent:
            started = time.monotonic()
            assert closed_by_server(silent, within=request_seconds + 2)
            assert time.monotonic() - started < request_seconds + 1.5
    finally:
        server.shutdown()
        server.server_close()


def test_silent_connections_cannot_pile_up_threads_and_the_probe_still_answers() -> None:
    server = serve_health("127.0.0.1:0")
    port = server.server_address[1]
    before = threading.active_count()
    silent = []
    for _ in range(MAX_CONNECTIONS + 4):
        silent.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.01)  # accepted in this order
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= MAX_CONNECTIONS
        # those beyond the cap took the slots of the oldest, which were closed at once
        assert [closed_by_server(connection, within=0.1) for connection in silent[:5]] == [True] * 4 + [False]
        assert _healthz_within(port, 1.0)  # at once: the probe, too, takes the oldest one's slot
        assert threads_back_to(before, within=REQUEST_SECONDS + 0.5)  # every silent connection's thread has ended
    finally:
        for connection in silent:
            connection.close()
        server.shutdown()
        server.server_close()


DRIP_SECONDS = 1.5
"""How often a dripping connection sends its next header byte: each read well within IDLE_SECONDS."""


def _drip(port: int, until: float) -> None:
    """Connection after connection (a new one as soon as the server closes one), each sending one header byte
    every DRIP_SECONDS and never ending its request line, until `until` (time.monotonic)."""
    while time.monotonic() < until:
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.settimeout(DRIP_SECONDS)
            try:
                while time.monotonic() < until:
                    connection.sendall(b"G")
                    try:
                        if connection.recv(1) == b"":
                            break  # closed by the server: open the next
                    except TimeoutError:
                        continue  # still open: the next byte (review 22, R22-4: it was closed here)
            except OSError:
                pass  # reset by the server: open the next


def test_connections_dripping_their_headers_leave_every_probe_answered() -> None:
    """Attack 22, F3: 16 connections sending a header byte every 4 s kept every slot, and every probe was refused."""
    server = serve_health("127.0.0.1:0")  # as the ETL starts it (ETL_HEALTH_ADDRESS)
    port = server.server_address[1]
    until = time.monotonic() + 2 * DRIP_SECONDS  # across the request bound: connections ended, opened anew
    drips = [threading.Thread(target=_drip, args=(port, until), daemon=True) for _ in range(MAX_CONNECTIONS)]
    try:
        for drip in drips:
            drip.start()
        time.sleep(0.3)  # every slot taken
        answered = []
        while time.monotonic() < until - 0.3:
            started = time.monotonic()
            answered.append(_healthz_within(port, 1.0) and time.monotonic() - started < 1.0)
            time.sleep(0.2)
        assert all(answered) and len(answered) >= 8, answered
    finally:
        for drip in drips:
            drip.join(timeout=DRIP_SECONDS + 1)
        server.shutdown()
        server.server_close()


def test_a_request_dripped_byte_by_byte_is_ended_at_the_request_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    request_seconds = 0.5  # the handler's bound here (REQUEST_SECONDS, 2 s, in the service): the same code, sooner
    monkeypatch.setattr(health._Handler, "request_seconds", request_seconds)
    server = serve_health("127.0.0.1:0")
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as dripping:
            started = time.monotonic()
            closed = False
            while not closed and time.monotonic() - started < request_seconds + 2:
                dripping.sendall(b"G")  # a byte every 0.2 s: each read far within IDLE_SECONDS
                closed = closed_by_server(dripping, within=0.2)
            assert closed and time.monotonic() - started < request_seconds + 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_bounded_server_refuses_a_handler_that_does_not_bound_the_whole_request() -> None:
    """Each read's timeout alone let dripping connections keep every slot (attack 22, F3): no server is built so."""
    unbounded = type("Unbounded", (BoundedThreads, ThreadingHTTPServer), {})
    with pytest.raises(TypeError, match="must bound the whole request"):
        unbounded(("127.0.0.1", 0), BaseHTTPRequestHandler)
