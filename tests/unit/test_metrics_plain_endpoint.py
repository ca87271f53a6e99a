"""The metrics endpoint in plain HTTP (loopback, or a private network by explicit opt-in): each connection bounded.

A key-less port must not let whoever reaches it hold a thread per silent or slow connection; and,
like the TLS endpoint, it has no cap on connections at once, so a flood cannot refuse the scraper.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.scrape import scrape
from tests.unit.silent_connections import closed_by_server, threads_back_to
from tokenvault_common import metrics_endpoint
from tokenvault_common.env import ConfigError, EnvReader
from tokenvault_common.metrics_endpoint import MetricsEndpoint, serve_metrics
from tokenvault_common.metrics_plaintext import read_metrics_plaintext

REQUEST_SECONDS = 1.0
"""The bound on a request the endpoint serves with here (metrics_endpoint.REQUEST_SECONDS, 5 s, in the
services): the same code cuts a connection off, a fifth of the wait for each test."""


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetricsEndpoint]:
    monkeypatch.setattr(metrics_endpoint._QuietWithin, "request_seconds", REQUEST_SECONDS)
    running = serve_metrics(0, "127.0.0.1", None, "T_PORT")
    yield running
    running.stop()


def test_the_plain_endpoint_serves_the_metrics(endpoint: MetricsEndpoint) -> None:
    assert "python_info" in scrape(f"http://127.0.0.1:{endpoint.port}/metrics")


def test_a_silent_connection_is_closed_by_the_server(endpoint: MetricsEndpoint) -> None:
    with socket.create_connection(("127.0.0.1", endpoint.port)) as silent:
        started = time.monotonic()
        assert closed_by_server(silent, within=REQUEST_SECONDS + 2)
        assert time.monotonic() - started < REQUEST_SECONDS + 1.5


def test_a_request_sent_a_byte_at_a_time_is_cut_off_when_its_time_is_up(endpoint: MetricsEndpoint) -> None:
    """Each byte comes well within a read timeout; the request as a whole still gets REQUEST_SECONDS."""
    with socket.create_connection(("127.0.0.1", endpoint.port)) as dripping:
        dripping.settimeout(0.5)
        started = time.monotonic()
        closed = False
        for byte in b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * 100:
            try:
                dripping.sendall(bytes([byte]))
                closed = dripping.recv(1) == b""
            except TimeoutError:
                continue  # still open, waiting for the rest of the request
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if closed or time.monotonic() - started > REQUEST_SECONDS + 3:
                break
        assert closed
        assert time.monotonic() - started < REQUEST_SECONDS + 1.5


def test_silent_connections_hold_no_thread_for_long_and_never_refuse_the_scraper(endpoint: MetricsEndpoint) -> None:
    before = threading.active_count()
    silent = [socket.create_connection(("127.0.0.1", endpoint.port)) for _ in range(40)]
    try:
        started = time.monotonic()
        assert "python_info" in scrape(f"http://127.0.0.1:{endpoint.port}/metrics")  # no cap to fill
        assert time.monotonic() - started < 2
        assert all(closed_by_server(connection, within=REQUEST_SECONDS + 2) for connection in silent)
        assert threads_back_to(before, within=2.0)
    finally:
        for connection in silent:
            connection.close()


def plaintext(env: dict[str, str], port: int = 9100) -> bool:
    reader = EnvReader(env)
    address = env.get("X_METRICS_ADDRESS", "127.0.0.1")
    allowed = read_metrics_plaintext(reader, "X_METRICS", port, address)
    reader.check("test")
    return allowed


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_plain_metrics_on_loopback_need_no_opt_in(address: str) -> None:
    assert plaintext({"X_METRICS_ADDRESS": address}) is False


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.0.0.7", "metrics.internal"])  # noqa: S104
def test_plain_metrics_beyond_loopback_are_refused_unless_opted_in(address: str) -> None:
    with pytest.raises(ConfigError, match=r"X_METRICS_TLS_CERT, X_METRICS_TLS_KEY and X_METRICS_TLS_CLIENT_CA"):
        plaintext({"X_METRICS_ADDRESS": address})
    assert plaintext({"X_METRICS_ADDRESS": address, "X_METRICS_PLAINTEXT": "allow"}) is True


def test_metrics_turned_off_or_over_tls_need_no_opt_in(tmp_path: Path) -> None:
    assert plaintext({"X_METRICS_ADDRESS": "0.0.0.0"}, port=0) is False  # noqa: S104
    tls = {f"X_METRICS_TLS_{name}": str(tmp_path / name) for name in ("CERT", "KEY", "CLIENT_CA")}
    assert plaintext({"X_METRICS_ADDRESS": "0.0.0.0", **tls}) is False  # noqa: S104


@pytest.mark.parametrize(
    ("value", "problem"),
    [("yes", r"X_METRICS_PLAINTEXT must be allow or unset, got 'yes'"), ("allow", r"contradicts X_METRICS_TLS_")],
)
def test_an_opt_in_that_means_nothing_or_contradicts_tls_is_refused(tmp_path: Path, value: str, problem: str) -> None:
    tls = {f"X_METRICS_TLS_{name}": str(tmp_path / name) for name in ("CERT", "KEY", "CLIENT_CA")}
    with pytest.raises(ConfigError, match=problem):
        plaintext({"X_METRICS_ADDRESS": "0.0.0.0", "X_METRICS_PLAINTEXT": value, **tls})  # noqa: S104
