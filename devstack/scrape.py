"""`python -m devstack.scrape URL...`: print the services' metrics, as Prometheus scrapes them.

The metrics are served over TLS to one client certificate only, the scraper's (the counters
tell whether a value is in the vault): this presents `METRICS_SCRAPER_TLS_CERT` /
`METRICS_SCRAPER_TLS_KEY` and checks the endpoint against `METRICS_TLS_CA` - the embedded
stack's stack.env names them (root's alone), compose's `metrics` tool mounts them.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from pathlib import Path


def scrape(url: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> str:
    """The metrics text at `url`; an `https` URL is verified against `ca`, presenting `cert`/`key` if given.

    Raises what urllib raises (URLError, ssl.SSLError, ConnectionError) when the endpoint refuses.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not a metrics URL: {url}")
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 - scheme checked above
        return str(response.read().decode())


def main(argv: list[str] | None = None) -> int:
    """Print each URL's metrics; exit 1 naming the URL that refused."""
    urls = sys.argv[1:] if argv is None else argv
    if not urls:
        print(__doc__, file=sys.stderr)
        return 2
    files = [os.environ.get(name) for name in ("METRICS_TLS_CA", "METRICS_SCRAPER_TLS_CERT", "METRICS_SCRAPER_TLS_KEY")]
    ca, cert, key = (Path(f) if f else None for f in files)
    for url in urls:
        try:
            print(scrape(url, ca, cert, key), end="")
        except (OSError, ValueError) as error:
            print(f"scrape: {url}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
