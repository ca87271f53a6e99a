"""The lock watchdog as Kubernetes runs it: metrics over TLS to Prometheus's certificate only, probes on a socket.

Review 34, R34-3 and R34-9: its metrics (a lock hog ended: an insider or a bug) were on the pod's loopback only, plain
HTTP, because `health` could read nothing else - with TLS metrics it said unhealthy for ever. Now its probes ask its
health listener on a Unix socket only its uid reaches (the vault's mechanism: health_listener.py, health_probe.py), so
its metrics are served over TLS and scraped. The real watchdog process, on the test stack's PostgreSQL (a hog of 300
entries there is far from filling its table), with the stack's metrics PKI. Its ended-sessions counter is at 0 from
the start, so the alert's `increase()` sees the first hog (a series born at 1 is no increase to Prometheus); SIGTERM
stops it promptly with exit 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.isolation import python_command
from devstack.procs import free_port, stop_pid, wait_until
from devstack.stack import REPO, lock_watchdog_env
from tests.integration.test_lock_watchdog import _QUARANTINE_WRITE
from tests.metrics_scrape import scrape
from vault_service.entrypoints.lock_watchdog import HEALTH_ADDRESS, main

ENDED = 'tokenvault_lock_watchdog_sessions_total{ended="true"}'
STOP_WITHIN_SECONDS = 3.0
"""SIGTERM to exit: its loop waits on the stop event, at most one look (0.25 s) away; Kubernetes' grace is 10 s."""


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for the health socket (a Unix socket's path holds 107 bytes; tmp_path's may be longer)."""
    directory = Path(tempfile.mkdtemp(prefix="tv-wd-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _value(metrics: str, series: str) -> float | None:
    """The sample of `series` (name and labels as exposed) in a scrape, None when it is not there."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.timeout(60)
def test_the_watchdog_serves_its_metrics_over_tls_and_its_probes_on_a_socket(
    stack_env: dict[str, str], socket_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    certs = Path(stack_env["STACK_DIR"]) / "certs" / "metrics"
    ca, scraper = Path(stack_env["METRICS_TLS_CA"]), Path(stack_env["METRICS_SCRAPER_TLS_CERT"])
    scraper_key = Path(stack_env["METRICS_SCRAPER_TLS_KEY"])
    port = free_port()
    health = f"unix:{socket_dir / 'health' / 'health.sock'}"  # its directory made 0700 by the watchdog
    env = lock_watchdog_env(stack_env) | {
        "TOKENVAULT_WATCHDOG_METRICS_PORT": str(port),
        "TOKENVAULT_WATCHDOG_METRICS_ADDRESS": "127.0.0.1",
        "TOKENVAULT_WATCHDOG_METRICS_TLS_CERT": str(certs / "vault-metrics.pem"),
        "TOKENVAULT_WATCHDOG_METRICS_TLS_KEY": str(certs / "vault-metrics-key.pem"),
        "TOKENVAULT_WATCHDOG_METRICS_TLS_CLIENT_CA": str(ca),
        HEALTH_ADDRESS: health,
    }
    probe = {HEALTH_ADDRESS: health}  # what the probe's exec sees: the pod's environment
    url = f"https://127.0.0.1:{port}/metrics"
    log_file = tmp_path / "lock_watchdog.log"
    command = python_command(None, Path(sys.prefix), "vault_service.entrypoints.lock_watchdog")
    with log_file.open("ab") as log:
        watchdog = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO, start_new_session=True
        )
    try:
        wait_until(lambda: '"started"' in log_file.read_text(), "started", 20, watchdog.pid, log_file)
        wait_until(lambda: main(probe, ["health"]) == 0, "healthy", 10, watchdog.pid, log_file)
        assert main(probe, ["health", "--alive"]) == 0
        assert (socket_dir / "health").stat().st_mode & 0o777 == 0o700

        before = scrape(url, ca, scraper, scraper_key)
        assert _value(before, ENDED) == 0.0, "the ended-sessions series must exist at 0 before the first hog"
        assert _value(before, "tokenvault_lock_watchdog_last_look_timestamp_seconds")
        assert "tokenvault_grpc_requests_total" not in before and "tokenvault_audit_" not in before  # its own only

        with psycopg.connect(stack_env["PG_ETL_DSN"]) as hog:  # the ETL's login over the threshold (attack 29, F1)
            hog.execute("".join(_QUARANTINE_WRITE.format(n=n) for n in range(300)).encode())
            wait_until(lambda: _value(scrape(url, ca, scraper, scraper_key), ENDED) == 1.0, "counted", 10)
            with pytest.raises(psycopg.OperationalError):
                hog.execute("SELECT 1")  # it was ended
        with pytest.raises(OSError) as refused:  # no client certificate: refused in the handshake
            scrape(url, ca)
        assert not isinstance(refused.value, FileNotFoundError)
        with pytest.raises(OSError):
            scrape(url.replace("https:", "http:"))  # nor plain HTTP on its port

        asked = time.monotonic()
        watchdog.send_signal(signal.SIGTERM)
        code = watchdog.wait(timeout=STOP_WITHIN_SECONDS + 5)
        took = time.monotonic() - asked
    finally:
        if watchdog.poll() is None:
            stop_pid(watchdog.pid)
            watchdog.wait()
    print(f"WATCHDOG: stopped {took:.2f} s after SIGTERM; the test took {time.monotonic() - started:.1f} s")
    assert code == 0 and took < STOP_WITHIN_SECONDS, (code, took, log_file.read_text())
    assert '"stopped"' in log_file.read_text().splitlines()[-1]
    assert main(probe, ["health", "--alive"]) == 1  # nothing answers on the socket any more
