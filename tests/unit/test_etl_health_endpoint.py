"""The ETL's key-less health endpoint: /healthz says ok, nothing else is served."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from devstack.procs import free_port
from etl_service.entrypoints.health import serve_health
from etl_service.errors import Misconfigured


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
