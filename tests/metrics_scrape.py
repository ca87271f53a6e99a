"""Fetching a service's Prometheus metrics as the stack's scraper does: over TLS with its client certificate."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path


def scrape(url: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> str:
    """The metrics text at `url`; an `https` URL is verified against `ca`, presenting `cert`/`key` if given.

    Raises what urllib raises (URLError, ssl.SSLError, ConnectionError) when the endpoint refuses.
    """
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not a metrics URL: {url}")
    with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 - scheme checked above
        return str(response.read().decode())


def stack_scrape(env: dict[str, str], url: str) -> str:
    """The metrics at `url` of an embedded stack (`env`: its stack.env), with the scraper's certificate."""
    return scrape(
        url, Path(env["METRICS_TLS_CA"]), Path(env["METRICS_SCRAPER_TLS_CERT"]), Path(env["METRICS_SCRAPER_TLS_KEY"])
    )
