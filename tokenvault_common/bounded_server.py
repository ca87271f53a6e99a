"""Thread-per-connection servers with bounds: how long a request may take, how many connections at once.

Why: socketserver's ThreadingMixIn gives every accepted connection a thread that waits on it for
ever. Whoever reaches the port (a health port needs no key) held a thread per silent connection
and could open as many as it liked (attack round 5, Break 2: 50 silent connections to the ETL's
/healthz, 50 threads). With BoundedThreads each connection's socket operations time out after
IDLE_SECONDS (as the metrics endpoint bounds its TLS handshake), at most MAX_CONNECTIONS are
served at once, and the handler must bound the whole request (RequestWithin, below).

Why the whole request, and why a full server ends its oldest connection rather than refuse the
newest: each read's timeout alone let 16 connections sending one header byte every 4 s keep
every slot for ever, and a full server closed each probe at once, so Kubernetes' liveness probe
restarted the ETL every minute (attack 22, F3). Now a request must arrive within its handler's
`request_seconds`, and a connection arriving while MAX_CONNECTIONS are served ends the one served
longest (shut down: its thread ends and frees the slot) and takes its slot: a probe sends its
request at once and is answered in milliseconds, so it is ended only if MAX_CONNECTIONS more
arrive meanwhile. Whoever keeps opening connections still costs the server a thread each for at
most `request_seconds` - and CPU, as any flood does.

RequestWithin bounds the whole request, for a server with a cap (above) or without (the plain
metrics endpoint): a client sending a byte every few seconds passes every read timeout, not a deadline.
"""

from __future__ import annotations

import contextlib
import io
import socket
import socketserver
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

IDLE_SECONDS = 5.0
"""How long a connection may leave the server waiting on one read or write before it is closed."""

MAX_CONNECTIONS = 16
"""Connections served at once; one more ends the connection served longest and takes its slot."""
MAKE_ROOM_SECONDS = 1.0
"""How long a new connection waits for the thread of the connection it ended to free the slot (milliseconds
in practice: the thread wakes as its socket is shut down); the new one is closed if it has not."""

if TYPE_CHECKING:
    _Base = socketserver.ThreadingTCPServer
    _Handler = socketserver.StreamRequestHandler
else:
    _Base = object
    _Handler = object


class BoundedThreads(_Base):
    """Mix in before a socketserver.ThreadingMixIn server: `class S(BoundedThreads, ThreadingHTTPServer)`.

    Its handler must be a RequestWithin (TypeError otherwise): a request is bounded as a whole.
    """

    idle_seconds: float = IDLE_SECONDS
    max_connections: int = MAX_CONNECTIONS
    request_queue_size = 64
    """The listen backlog (socketserver's is 5): a burst is accepted, and the extra refused, at once,
    rather than left to the kernel's SYN retries for seconds."""

    def __init__(self, server_address: Any, handler: Any, *args: Any, **kwargs: Any) -> None:
        """The server's own arguments; the slots are counted from `max_connections`."""
        if not issubclass(handler, RequestWithin):
            raise TypeError(f"{handler.__name__} must bound the whole request: mix in RequestWithin")
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._lock = threading.Lock()
        self._served: dict[Any, None] = {}  # connections with a slot, the oldest first
        super().__init__(server_address, handler, *args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection (its reads then time out), in a free slot or the oldest connection's."""
        if not self._slots.acquire(blocking=False) and not self._room_made():
            self.shutdown_request(request)
            return
        with self._lock:
            self._served[request] = None
        try:
            if isinstance(request, socket.socket):
                request.settimeout(self.idle_seconds)
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            self._slots.release()  # no thread started: the server closes the connection itself
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection (ThreadingMixIn closes it), then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Nothing for a connection ended or dropped (an OSError: e.g. one ended to make room); the traceback else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def _room_made(self) -> bool:
        """End the connection served longest; whether its slot came free within MAKE_ROOM_SECONDS."""
        with self._lock:
            oldest = next(iter(self._served), None)
            self._served.pop(oldest, None)
        if oldest is None:
            return False
        with contextlib.suppress(OSError):  # closed meanwhile: its slot is coming free anyway
            oldest.shutdown(socket.SHUT_RDWR)  # its thread's read or write returns or fails at once
        return self._slots.acquire(timeout=MAKE_ROOM_SECONDS)

    def _forget(self, request: Any) -> None:
        with self._lock:
            self._served.pop(request, None)


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
