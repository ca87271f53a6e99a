"""The deployment files agree with the ETL on shutdown: its grace ends well before the platform kills it."""

from __future__ import annotations

from pathlib import Path

import yaml

from etl_service.config import settings_help
from tests.compose_model import resolved

REPO = Path(__file__).resolve().parents[2]
MARGIN_SECONDS = 5  # releasing what is left and closing connections


def test_compose_stops_the_etl_only_after_its_own_grace_period(tmp_path: Path) -> None:
    etl = resolved(tmp_path)["services"]["etl-service"]
    grace = float(etl["environment"]["ETL_SHUTDOWN_GRACE_SECONDS"])
    stop = etl["stop_grace_period"]  # compose's model gives a duration such as "30s"
    assert grace + MARGIN_SECONDS <= float(str(stop).rstrip("s"))


def test_kubernetes_waits_longer_than_the_etl_grace_period() -> None:
    deployment = yaml.safe_load((REPO / "deploy/k8s/etl-service/deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    grace = float(env["ETL_SHUTDOWN_GRACE_SECONDS"])
    assert grace + MARGIN_SECONDS <= spec["terminationGracePeriodSeconds"]
    assert "ETL_SHUTDOWN_GRACE_SECONDS, 1-600, default 20" in settings_help()  # the default fits as well
