"""The metrics endpoint over TLS: the scraper's certificate only, no blocking handshake, settings checked."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.certs import create_authority, create_metrics_certificates, issue
from devstack.scrape import main as scrape_main
from tests.metrics_scrape import scrape
from tokenvault_common import metrics_endpoint
from tokenvault_common.env import ConfigError, EnvReader
from tokenvault_common.metrics_endpoint import (
    HANDSHAKE_SECONDS,
    MetricsEndpoint,
    MetricsEndpointError,
    MetricsTls,
    read_metrics_tls,
    serve_metrics,
    tls_context,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    create_metrics_certificates(directory / "metrics")
    grpc = create_authority(directory / "grpc")
    issue(grpc, directory / "grpc", "etl-service")
    return directory


@pytest.fixture(scope="module")
def endpoint(pki: Path) -> Iterator[MetricsEndpoint]:
    metrics = pki / "metrics"
    tls = MetricsTls(metrics / "vault-metrics.pem", metrics / "vault-metrics-key.pem", metrics / "ca.pem", "T")
    running = serve_metrics(0, "127.0.0.1", tls_context(tls), "T_PORT")
    yield running
    running.stop()


def url(endpoint: MetricsEndpoint) -> str:
    return f"https://127.0.0.1:{endpoint.port}/metrics"


def as_scraper(pki: Path, endpoint: MetricsEndpoint) -> str:
    metrics = pki / "metrics"
    return scrape(
        url(endpoint), metrics / "ca.pem", metrics / "metrics-scraper.pem", metrics / "metrics-scraper-key.pem"
    )


def test_the_scraper_reads_the_metrics(pki: Path, endpoint: MetricsEndpoint) -> None:
    assert "python_info" in as_scraper(pki, endpoint)


@pytest.mark.parametrize(
    "presented",
    [None, "grpc/etl-service", "metrics/etl-metrics"],
    ids=["no certificate", "a gRPC client's certificate", "a metrics server certificate"],
)
def test_anyone_else_is_refused_in_the_handshake(pki: Path, endpoint: MetricsEndpoint, presented: str | None) -> None:
    cert, key = (pki / f"{presented}.pem", pki / f"{presented}-key.pem") if presented else (None, None)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as refused:
        scrape(url(endpoint), pki / "metrics" / "ca.pem", cert, key)
    assert not isinstance(refused.value, FileNotFoundError)
    with pytest.raises(OSError):  # nor in plain HTTP on the same port
        scrape(url(endpoint).replace("https:", "http:"))


def test_an_idle_connection_does_not_hold_up_the_scraper(pki: Path, endpoint: MetricsEndpoint) -> None:
    """prometheus_client's own TLS shakes hands in its accepting thread: one silent client stops every scrape."""
    with socket.create_connection(("127.0.0.1", endpoint.port)):  # connects, never says hello
        started = time.monotonic()
        as_scraper(pki, endpoint)
        assert time.monotonic() - started < HANDSHAKE_SECONDS


def settings(pki: Path, *given: str) -> dict[str, str]:
    metrics = pki / "metrics"
    every = {
        "X_METRICS_TLS_CERT": str(metrics / "vault-metrics.pem"),
        "X_METRICS_TLS_KEY": str(metrics / "vault-metrics-key.pem"),
        "X_METRICS_TLS_CLIENT_CA": str(metrics / "ca.pem"),
        "X_GRPC_CA": str(pki / "grpc" / "ca.pem"),
    }
    return {name: every[name] for name in (*given, "X_GRPC_CA")}


def read(env: dict[str, str]) -> MetricsTls | None:
    reader = EnvReader(env)
    tls = read_metrics_tls(reader, "X_METRICS", "X_GRPC_CA")
    reader.check("test")
    return tls


def test_none_of_the_settings_is_plain_http_all_three_is_tls(pki: Path) -> None:
    assert read(settings(pki)) is None
    tls = read(settings(pki, "X_METRICS_TLS_CERT", "X_METRICS_TLS_KEY", "X_METRICS_TLS_CLIENT_CA"))
    assert tls is not None and tls.client_ca.name == "ca.pem"


def test_half_the_settings_is_refused_naming_what_is_missing(pki: Path) -> None:
    with pytest.raises(ConfigError, match=r"X_METRICS_TLS_KEY, X_METRICS_TLS_CLIENT_CA not set"):
        read(settings(pki, "X_METRICS_TLS_CERT"))


def test_the_grpc_clients_ca_is_refused_as_the_metrics_client_ca(pki: Path) -> None:
    env = settings(pki, "X_METRICS_TLS_CERT", "X_METRICS_TLS_KEY")
    env["X_METRICS_TLS_CLIENT_CA"] = env["X_GRPC_CA"]
    with pytest.raises(ConfigError, match=r"must not be the CA of the gRPC clients \(X_GRPC_CA\)"):
        read(env)


def test_a_key_that_does_not_load_is_refused_naming_the_settings(pki: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key")
    metrics = pki / "metrics"
    tls = MetricsTls(metrics / "vault-metrics.pem", garbage, metrics / "ca.pem", "X_METRICS")
    with pytest.raises(MetricsEndpointError, match=r"cannot load X_METRICS_TLS_CERT .* with X_METRICS_TLS_KEY"):
        tls_context(tls)


def test_the_scrape_command_prints_with_the_scraper_s_files_and_fails_naming_a_refusing_url(
    pki: Path, endpoint: MetricsEndpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = pki / "metrics"
    monkeypatch.setenv("METRICS_TLS_CA", str(metrics / "ca.pem"))
    monkeypatch.setenv("METRICS_SCRAPER_TLS_CERT", str(metrics / "metrics-scraper.pem"))
    monkeypatch.setenv("METRICS_SCRAPER_TLS_KEY", str(metrics / "metrics-scraper-key.pem"))
    assert scrape_main([url(endpoint)]) == 0
    assert "python_info" in capsys.readouterr().out
    monkeypatch.setenv("METRICS_SCRAPER_TLS_KEY", str(pki / "grpc" / "etl-service-key.pem"))
    monkeypatch.setenv("METRICS_SCRAPER_TLS_CERT", str(pki / "grpc" / "etl-service.pem"))
    assert scrape_main([url(endpoint)]) == 1
    assert f"scrape: {url(endpoint)}:" in capsys.readouterr().err


def _client_hello() -> bytes:
    """The first flight of a TLS client (its ClientHello), as bytes to drip."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def _dripped_until_closed(connection: socket.socket, data: bytes, every: float, give_up: float) -> float | None:
    """Send `data` a byte every `every` s until the server closes; the seconds that took, or None at `give_up`."""
    connection.settimeout(every)
    started = time.monotonic()
    for byte in data:
        try:
            connection.sendall(bytes([byte]))
            if connection.recv(1) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass  # still open
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        if time.monotonic() - started > give_up:
            return None
    return None


def test_a_handshake_dripped_a_byte_at_a_time_is_cut_off_when_its_time_is_up(
    endpoint: MetricsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each byte came within the read timeout, so the thread was held for ever (no cap: such threads added up).
    monkeypatch.setattr(metrics_endpoint, "HANDSHAKE_SECONDS", 1.0)
    with socket.create_connection(("127.0.0.1", endpoint.port)) as dripping:
        took = _dripped_until_closed(dripping, _client_hello(), every=0.25, give_up=4.0)
    assert took is not None and took < 2.5, took


def test_a_request_dripped_after_the_handshake_is_cut_off_when_its_time_is_up(
    pki: Path, endpoint: MetricsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_endpoint._QuietWithin, "request_seconds", 1.0)
    metrics = pki / "metrics"
    context = ssl.create_default_context(cafile=str(metrics / "ca.pem"))
    context.load_cert_chain(str(metrics / "metrics-scraper.pem"), str(metrics / "metrics-scraper-key.pem"))
    with (
        socket.create_connection(("127.0.0.1", endpoint.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as scraper,
    ):
        took = _dripped_until_closed(scraper, b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * 100, 0.25, 4.0)
    assert took is not None and took < 2.5, took
