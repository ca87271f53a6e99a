"""Fetching an embedded stack's Prometheus metrics as its scraper does: over TLS with its client certificate."""

from __future__ import annotations

from pathlib import Path

from devstack.scrape import scrape

__all__ = ["scrape", "stack_scrape"]


def stack_scrape(env: dict[str, str], url: str) -> str:
    """The metrics at `url` of an embedded stack (`env`: its stack.env), with the scraper's certificate."""
    ca, cert, key = (Path(env[k]) for k in ("METRICS_TLS_CA", "METRICS_SCRAPER_TLS_CERT", "METRICS_SCRAPER_TLS_KEY"))
    return scrape(url, ca, cert, key)
