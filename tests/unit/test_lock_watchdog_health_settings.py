"""The lock watchdog's health listener settings and answers (review 34, R34-9).

With its metrics over TLS (Kubernetes: scraped by Prometheus's client certificate only), `health` - which holds no
certificate - read nothing and said unhealthy for ever; so the metrics stayed plain on the loopback and were never
scraped. Its probes now ask a health listener on a Unix socket (TOKENVAULT_WATCHDOG_HEALTH_ADDRESS), as the vault's;
TLS metrics without it are refused at the start, naming the setting. The process itself, over the socket and TLS:
tests/integration/test_lock_watchdog_metrics_tls.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from tokenvault_common.env import ConfigError
from vault_service.entrypoints.lock_watchdog import (
    ALIVE_WITHIN_SECONDS,
    HEALTH_ADDRESS,
    HEALTHY_WITHIN_SECONDS,
    LAST_LOOK,
    LAST_RUN,
    LIVENESS_SERVICE,
    WatchdogConfig,
    WatchdogHealth,
)

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    files = {}
    for name in ("CERT", "KEY", "CLIENT_CA"):
        (tmp_path / name).touch()
        files[f"TOKENVAULT_WATCHDOG_METRICS_TLS_{name}"] = str(tmp_path / name)
    dsn = {
        "TOKENVAULT_WATCHDOG_DSN": "postgresql://watchdog@db/tokenvault?sslmode=verify-full",
        "TOKENVAULT_WATCHDOG_METRICS_PORT": "9103",
    }
    return dsn | files | more


def test_metrics_over_tls_need_the_health_socket(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"need {HEALTH_ADDRESS}=unix:/path"):
        WatchdogConfig.from_env(_env(tmp_path))
    config = WatchdogConfig.from_env(_env(tmp_path, **{HEALTH_ADDRESS: "unix:/tmp/wd-health/health.sock"}))
    assert config.metrics_tls is not None and config.health_address == "unix:/tmp/wd-health/health.sock"


@pytest.mark.parametrize("address", ["127.0.0.1:8086", "unix:relative/health.sock"])
def test_the_health_socket_is_an_absolute_unix_path(tmp_path: Path, address: str) -> None:
    with pytest.raises(ConfigError, match=HEALTH_ADDRESS):
        WatchdogConfig.from_env(_env(tmp_path, **{HEALTH_ADDRESS: address}))


def test_its_answers_follow_its_last_look_and_its_loop() -> None:
    health = WatchdogHealth()
    now = time.time()
    LAST_LOOK.set(now)
    LAST_RUN.set(now)
    assert (health.status_of(""), health.status_of(LIVENESS_SERVICE)) == (SERVING, SERVING)
    LAST_LOOK.set(now - HEALTHY_WITHIN_SECONDS - 1)  # its looks fail (the database down): not ready, alive
    assert (health.status_of(""), health.status_of(LIVENESS_SERVICE)) == (NOT_SERVING, SERVING)
    LAST_RUN.set(now - ALIVE_WITHIN_SECONDS - 1)  # its loop stuck
    assert health.status_of(LIVENESS_SERVICE) == NOT_SERVING
    assert health.status_of("tokenvault.dependency.database") is None


def test_every_ended_label_is_scraped_from_the_start() -> None:
    """A series first scraped at 1 is no `increase()` to Prometheus: the first hog ended would page nobody."""
    for ended in ("true", "false", "gone"):
        assert REGISTRY.get_sample_value("tokenvault_lock_watchdog_sessions_total", {"ended": ended}) is not None
