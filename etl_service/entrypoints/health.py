"""The ETL's health endpoint (ETL_HEALTH_ADDRESS): plain HTTP, `GET /healthz` -> 200 while the process runs.

Why apart from /metrics: the metrics are served only to the scraper's client certificate
(their counters are a membership oracle), and a health check should need no key at all -
compose's in-container check and Kubernetes' probes reach this instead. It says "ok" and
nothing else. Being key-less, it is bounded (tokenvault_common.bounded_server): a request
must arrive within REQUEST_SECONDS, however it drips, and at most MAX_CONNECTIONS are served at
once, a new one ending the connection served longest: 16 connections sending a header byte every
4 s no longer keep every probe refused (attack 22, F3).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from etl_service.errors import Misconfigured
from tokenvault_common.bounded_server import BoundedThreads, RequestWithin

PATH = "/healthz"
REQUEST_SECONDS = 2.0
"""How long a connection may take to send its request line and headers: a probe sends its ~100 bytes at once."""


class _Handler(RequestWithin, BaseHTTPRequestHandler):
    request_seconds = REQUEST_SECONDS

    def do_GET(self) -> None:
        found = self.path.split("?", 1)[0] == PATH
        body = b"ok\n" if found else b"not found\n"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log (the ETL logs JSON)."""


class _Server(BoundedThreads, ThreadingHTTPServer):
    """ThreadingHTTPServer with its connections' time and number bounded."""


def serve_health(address: str) -> ThreadingHTTPServer:
    """Serve /healthz on `address` (host:port, [IPv6]:port) in a daemon thread; Misconfigured when it cannot.

    The address family is the address's own (an IPv6 address is bound over IPv6, not refused by
    an IPv4 socket).
    """
    host, port = _host_and_port(address)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class: type[_Server] = type("HealthServer", (_Server,), {"address_family": family})
        server = server_class((host, port), _Handler)
    except OSError as error:
        reason = error.strerror or str(error)
        raise Misconfigured(f"cannot serve health checks on {address} (ETL_HEALTH_ADDRESS): {reason}") from None
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def _host_and_port(address: str) -> tuple[str, int]:
    """`host:port` or `[IPv6]:port` split; Misconfigured naming the form otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise Misconfigured(f"ETL_HEALTH_ADDRESS must be host:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port)
    if ":" in host:  # ::1:8086 could be the address ::1:8086 itself, without a port
        raise Misconfigured(f"ETL_HEALTH_ADDRESS: write an IPv6 address in brackets, e.g. [::1]:8086, got {address!r}")
    return host, int(port)
