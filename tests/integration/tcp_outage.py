"""A TCP pass-through whose `down()` ends every connection and refuses new ones until `up()`: a dependency outage.

`freeze()` is the other outage: connections stay open, new ones are accepted, and nothing is passed either way
(a hung peer) until `up()`.

For outages of one client's path alone (the ETL's path to OpenBao, say) while every other component keeps its own:
`url(address)` is `address` with the proxy's port. TLS passes through untouched (the certificate names the host,
not the port).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class TcpOutage:
    """The proxy to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._up = threading.Event()
        self._up.set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, address: str) -> str:
        """`address` (scheme://host:port) pointed at the proxy."""
        parts = urlsplit(address)
        return urlunsplit((parts.scheme, f"{parts.hostname}:{self.port}", parts.path, parts.query, parts.fragment))

    def down(self) -> None:
        """End every open connection; refuse new ones (accepted and closed at once) until up()."""
        self._up.clear()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def freeze(self) -> None:
        """Pass nothing either way from now on, ending no connection (a hung peer), until up()."""
        self._flowing.clear()

    def up(self) -> None:
        """Pass connections through again."""
        self._up.set()
        self._flowing.set()

    def close(self) -> None:
        """Stop the proxy."""
        self.down()
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=_pump, args=(client, server, self._flowing), daemon=True).start()
            threading.Thread(target=_pump, args=(server, client, self._flowing), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket, flowing: threading.Event) -> None:
    with contextlib.suppress(OSError):
        while flowing.wait() and (data := source.recv(65536)):
            flowing.wait()  # frozen: what was read is held back
            target.sendall(data)
    _close(source, target)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
