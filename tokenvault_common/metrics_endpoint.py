"""The Prometheus endpoint of both services: plain HTTP, or TLS requiring a scraper's client certificate.

Why a client certificate: the counters are an oracle. Whoever can put an event on the queue and
read `tokenvault_tokenize_new_tokens_total` (or the cache misses) learns whether a value was in
the vault already; binding 127.0.0.1 keeps other machines out, not other local users or
containers. So the endpoint takes settings `<PREFIX>_TLS_CERT`, `_TLS_KEY` and `_TLS_CLIENT_CA`
(all three or none): the CA must be one that signs only the metrics scraper's certificate - not
the CA of the vault's gRPC clients, or the ETL and every analyst could read the oracle.

Why not prometheus_client's own `start_http_server(certfile=...)`: it wraps the listening socket,
so the TLS handshake runs in the one thread that accepts connections, without a time limit: one
idle connection from anyone stops every scrape (measured: a scrape behind an idle connection
timed out). Here the handshake runs in the connection's own thread and must finish, as a whole,
within HANDSHAKE_SECONDS; then the request must arrive within REQUEST_SECONDS
(bounded_server.RequestWithin), however it is dripped: a bound on each read alone let a scraper's
connection sending a byte every few seconds hold its thread for ever, and with no cap such
connections add up (noticed while fixing attack 22, F3). The exposition itself is prometheus_client's
(`make_wsgi_app`).

Plain HTTP is served only where tokenvault_common.metrics_plaintext allows it (loopback, or a
private network by opt-in), and bounded as the TLS endpoint is: each connection's request must
arrive within REQUEST_SECONDS, and no cap on connections at once.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client.exposition import ThreadingWSGIServer

from tokenvault_common.bounded_server import RequestWithin
from tokenvault_common.env import ConfigError, EnvReader

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 5.0
"""How long a connection may take to complete its TLS handshake (all of it, however it drips)."""

REQUEST_SECONDS = 5.0
"""How long a connection may take to send its request once connected (TLS: once the handshake is done)."""


class MetricsEndpointError(ConfigError):
    """The metrics endpoint cannot be served as configured; the message names the setting."""


@dataclass(frozen=True)
class MetricsTls:
    """The files of a metrics endpoint served over TLS with a required client certificate."""

    cert: Path
    """The endpoint's server certificate, PEM (<PREFIX>_TLS_CERT)."""
    key: Path
    """Its private key, PEM (<PREFIX>_TLS_KEY)."""
    client_ca: Path
    """The CA whose certificates may scrape (<PREFIX>_TLS_CLIENT_CA): the scraper's alone."""
    prefix: str
    """The settings' prefix, e.g. TOKENVAULT_METRICS, for error messages."""


def read_metrics_tls(read: EnvReader, prefix: str, grpc_ca_setting: str) -> MetricsTls | None:
    """`<prefix>_TLS_CERT`, `_TLS_KEY`, `_TLS_CLIENT_CA`: all three (TLS) or none (plain HTTP).

    Half of them is a problem recorded in `read` (the service stops at start), as is a client CA
    that shares a certificate with the one in `grpc_ca_setting` (the gRPC clients' CA).
    """
    names = (f"{prefix}_TLS_CERT", f"{prefix}_TLS_KEY", f"{prefix}_TLS_CLIENT_CA")
    given = {name: read.optional(name) for name in names}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        read.problems.append(
            f"metrics over TLS needs {', '.join(names)} together; {', '.join(missing)} not set"
            f" (set all three, or none to serve metrics in plain HTTP)"
        )
        return None
    cert, key, client_ca = (read.existing_file(name) or Path() for name in names)
    grpc_ca = read.optional(grpc_ca_setting)
    if client_ca.is_file() and grpc_ca and Path(grpc_ca).is_file() and _shared(client_ca, Path(grpc_ca)):
        read.problems.append(
            f"{prefix}_TLS_CLIENT_CA must not be the CA of the gRPC clients ({grpc_ca_setting}): every"
            " client it signs (the ETL, analysts) could read the metrics; use a CA that signs only the"
            " metrics scraper's certificate"
        )
    return MetricsTls(cert, key, client_ca, prefix)


def _shared(first: Path, second: Path) -> bool:
    """Whether the two PEM bundles hold a certificate in common (unparseable: left to the TLS setup)."""
    try:
        ours = {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(first.read_bytes())}
        theirs = {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(second.read_bytes())}
    except (OSError, ValueError):
        return False
    return bool(ours & theirs)


def tls_context(tls: MetricsTls) -> ssl.SSLContext:
    """A server context requiring a client certificate from `tls.client_ca`; MetricsEndpointError naming the setting."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=str(tls.client_ca))
    except (OSError, ssl.SSLError) as error:
        raise MetricsEndpointError(
            f"cannot load {tls.prefix}_TLS_CLIENT_CA ({tls.client_ca}): {_reason(error)}"
        ) from None
    try:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as error:
        raise MetricsEndpointError(
            f"cannot load {tls.prefix}_TLS_CERT ({tls.cert}) with {tls.prefix}_TLS_KEY ({tls.key}): {_reason(error)}"
        ) from None
    return context


def _reason(error: BaseException) -> str:
    return str(getattr(error, "strerror", None) or getattr(error, "reason", None) or error)


class _Quiet(WSGIRequestHandler):
    """No access log on stderr (the services log JSON)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop it."""


class _QuietWithin(RequestWithin, _Quiet):
    """Both endpoints' handler: no access log, the request within REQUEST_SECONDS."""

    request_seconds = REQUEST_SECONDS


class _OneLineErrors(ThreadingWSGIServer):
    """A refused, broken or timed-out connection is logged in one line, not as a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line for an OSError (timeouts included); the traceback for anything else."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.info("metrics: connection refused or dropped: %s", _reason(error))
        else:
            log.exception("metrics: request failed")


class _PlainServer(_OneLineErrors):
    """Plain HTTP, each connection's request within REQUEST_SECONDS (its handler, _QuietWithin).

    No cap on connections at once, for the TLS endpoint's reason (below): nothing tells the
    scraper from anyone else before the request, so a cap would let a flood refuse it; bounding
    each connection's life keeps a flood's threads to what it opens in a few seconds.
    """


class _TlsServer(_OneLineErrors):
    """Accepts plainly; each connection's thread does its TLS handshake, within HANDSHAKE_SECONDS.

    No cap on connections at once (unlike the ETL's /healthz, tokenvault_common/bounded_server.py):
    whoever lacks the scraper's certificate ends in the handshake, so each thread lives at most
    HANDSHAKE_SECONDS; a cap would let a flood of silent connections refuse the scraper and so
    silence the alerts, which is worse for this endpoint than the threads (insider round 5).
    """

    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        """The accepted connection, wrapped but not yet shaken hands with (that is the handler thread's)."""
        connection, address = self.socket.accept()
        connection.settimeout(HANDSHAKE_SECONDS)
        return self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake (a refused certificate ends here), then serve the request.

        The socket's timeout (HANDSHAKE_SECONDS, from get_request) bounds the handshake as a whole: CPython's
        do_handshake waits against one deadline, not a fresh timeout per read.
        """
        request.do_handshake()
        super().finish_request(request, client_address)


@dataclass
class MetricsEndpoint:
    """A running metrics endpoint."""

    server: ThreadingWSGIServer
    port: int

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(port: int, address: str, context: ssl.SSLContext | None, port_setting: str) -> MetricsEndpoint:
    """Serve the default registry on `address:port` in a daemon thread: TLS with `context`, else plain HTTP.

    Whether plain HTTP may be served on `address` is the settings' check (metrics_plaintext), at start.
    MetricsEndpointError naming `port_setting` when the port cannot be bound.
    """
    base: type[ThreadingWSGIServer] = _TlsServer if context else _PlainServer
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class = type("MetricsServer", (base,), {"address_family": family, "context": context})
        server: ThreadingWSGIServer = make_server(
            address,
            port,
            prometheus_client.make_wsgi_app(),
            server_class,
            handler_class=_QuietWithin,
        )
    except OSError as error:
        raise MetricsEndpointError(
            f"cannot serve metrics on {address}:{port} ({port_setting}): {_reason(error)}"
        ) from None
    if context is None:
        log.warning("metrics served in plain HTTP on %s:%s: whoever reaches the port reads them", address, port)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return MetricsEndpoint(server, server.server_port)
