"""What every gRPC server of this package bounds, apart from the servers: the vault's port and the health listeners.

Here, not in server.py and metrics.py, so that a health listener (health_listener.py) is served without importing the
vault's server and its metrics: the lock watchdog serves one (its probes, while its metrics are TLS-only), and the
vault's metrics in its registry would be scraped as the watchdog's (the audit checkpoint's timestamp at 0 and the like:
each a false alert or a wrong aggregate; review 34, R34-3, R34-9).
"""

from __future__ import annotations

from prometheus_client import Counter

HANDSHAKE_SECONDS = 5.0
"""How long a new connection may take to finish its TLS handshake and send HTTP/2's opening SETTINGS
(TOKENVAULT_HANDSHAKE_SECONDS); gRPC core closes it after that. Core's default, 120 s, let 20,000
connections that never sent a ClientHello hold the vault's file descriptors, and no new client -
a reconnecting ETL, an analyst, a probe - could connect (attack 21, F5). A handshake on a data-centre
link takes milliseconds."""
STREAM_WINDOW_BYTES = 64 * 1024
"""What a client may send on a call before the service reads its request (HTTP/2's stream window,
gRPC's `grpc.http2.lookahead_bytes`; 64 KiB is HTTP/2's default). A request the service reads is let
in whole, up to guard.py's HARD_MESSAGE_LIMIT: gRPC core widens the window to the size the message announces,
and refuses one over the limit from its 5-byte header, before its body. So an insider's calls
waiting in the queue hold at most server.py's STREAMS_PER_CONNECTION x 64 KiB per connection (MAX_CONCURRENT_CALLS
x 64 KiB in all), and an oversize call costs the service nothing (docs/threat-model.md)."""
RECEIVE_WINDOW_OPTIONS: list[tuple[str, int]] = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
]
"""gRPC core's bandwidth-delay probing off, so the stream window stays STREAM_WINDOW_BYTES.

With probing on (gRPC's default) core raised every stream's window of a busy connection to at least
4 MiB, then to twice its estimate of the link's bandwidth-delay product (27 MB on loopback within a
second): the window applies to calls no worker has begun to read, so twelve 60 MB calls queued
behind busy workers took the service from 85 to 400 MB (a CI run; up to +618 MB with its one worker
held). Probing only widens what a link carries in flight: the vault's 1,000-item requests (~30 KiB)
fit one window, and larger ones are let in whole once read (docs/performance.md, 5 December)."""

CALLS_WITHOUT_REQUEST = Counter(
    "tokenvault_calls_without_request_total",
    "Calls ended because they did not deliver their request within TOKENVAULT_REQUEST_READ_SECONDS,"
    " by client (health-listener for the plaintext health listener) and method",
    ["client", "method"],
)
