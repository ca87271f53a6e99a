"""Thread-per-connection servers with bounds: how long a connection may stay silent, how many at once.

Why: socketserver's ThreadingMixIn gives every accepted connection a thread that waits on it for
ever. Whoever reaches the port (a health port needs no key) held a thread per silent connection
and could open as many as it liked (attack round 5, Break 2: 50 silent connections to the ETL's
/healthz, 50 threads). With BoundedThreads each connection's socket operations time out after
IDLE_SECONDS (as the metrics endpoint bounds its TLS handshake), and a connection arriving while
MAX_CONNECTIONS are in progress is closed at once, before any thread starts.

What it does not do: the timeout bounds each read, not the whole request, and whoever keeps
MAX_CONNECTIONS open (reconnecting every few seconds) gets the others refused - a probe then fails
until they close. It bounds the threads and memory such a client costs, not its nuisance.

RequestWithin bounds the whole request instead, for a server with no cap (the plain metrics
endpoint): a client sending a byte every few seconds passes every read timeout, not a deadline.
"""

from __future__ import annotations

import io
import socket
import socketserver
import threading
import time
from typing import TYPE_CHECKING, Any

IDLE_SECONDS = 5.0
"""How long a connection may leave the server waiting on one read or write before it is closed."""

MAX_CONNECTIONS = 16
"""Connections served at once; one more is closed as soon as it is accepted."""

if TYPE_CHECKING:
    _Base = socketserver.ThreadingTCPServer
    _Handler = socketserver.StreamRequestHandler
else:
    _Base = object
    _Handler = object


class BoundedThreads(_Base):
    """Mix in before a socketserver.ThreadingMixIn server: `class S(BoundedThreads, ThreadingHTTPServer)`."""

    idle_seconds: float = IDLE_SECONDS
    max_connections: int = MAX_CONNECTIONS
    request_queue_size = 64
    """The listen backlog (socketserver's is 5): a burst is accepted, and the extra refused, at once,
    rather than left to the kernel's SYN retries for seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The server's own arguments; the slots are counted from `max_connections`."""
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection when a slot is free (its reads then time out); closed at once when not."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            if isinstance(request, socket.socket):
                request.settimeout(self.idle_seconds)
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: the server closes the connection itself
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection (ThreadingMixIn closes it), then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _ReadsUntil(io.RawIOBase):
    """A connection's bytes, each read given only what is left until `deadline` (time.monotonic)."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        """Yes."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Bytes into `buffer`; TimeoutError once the deadline has passed or passes while waiting."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


class RequestWithin(_Handler):
    """Mix in before a StreamRequestHandler: the request's reads together get `request_seconds`.

    The response is then written within the socket timeout the last read left, so a connection
    holds its thread for about twice `request_seconds` at most, however it drips its bytes.
    """

    request_seconds: float = IDLE_SECONDS

    def setup(self) -> None:
        """The handler's own setup, its reader replaced by one that stops at the deadline."""
        super().setup()
        self.rfile.close()
        deadline = time.monotonic() + self.request_seconds
        self.rfile = io.BufferedReader(_ReadsUntil(self.connection, deadline))
