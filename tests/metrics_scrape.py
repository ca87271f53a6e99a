"""Fetching an embedded stack's Prometheus metrics as its scraper does: over TLS with its client certificate."""

from __future__ import annotations

from pathlib import Path

from devstack.scrape import scrape

__all__ = ["quarantined_total", "scrape", "stack_scrape"]


def stack_scrape(env: dict[str, str], url: str) -> str:
    """The metrics at `url` of an embedded stack (`env`: its stack.env), with the scraper's certificate."""
    ca, cert, key = (Path(env[k]) for k in ("METRICS_TLS_CA", "METRICS_SCRAPER_TLS_CERT", "METRICS_SCRAPER_TLS_KEY"))
    return scrape(url, ca, cert, key)


def quarantined_total(etl_metrics: str) -> float:
    """The ETL's `etl_messages_quarantined_total`, summed over its reasons."""
    prefix = "etl_messages_quarantined_total{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in etl_metrics.splitlines() if line.startswith(prefix))
