"""A TCP proxy to PostgreSQL that loses the answer to a COMMIT: committed, and the client never told.

`CommitCut(port)` listens on a free local port and forwards every connection to the server on `port`, reading the
client's side of the protocol (no TLS: `dsn` adds sslmode=disable). Once `arm()`ed, the first COMMIT of a
transaction that sent `mark` (by default a COPY into user_logins: the ETL's load; `ERASE_MARK`: the vault's
erasure) is forwarded, the server given `settle_seconds` to commit it, and the connection then closed both ways
without its answer - what a connection reset, a proxy or a failover does to a COMMIT in flight. The client's
driver sees a lost connection: whether its transaction committed is unknown to it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

_LOAD_MARK = b"COPY public.user_logins"
ERASE_MARK = b"vault.erase_tokens("
"""What the vault's erasure sends (tokens.py `_erase_tokens`): its transaction's COMMIT is the one cut."""


class CommitCut:
    """The proxy; `cuts` counts the COMMITs whose answers it dropped."""

    def __init__(self, upstream_port: int, settle_seconds: float = 0.5, mark: bytes = _LOAD_MARK) -> None:
        self._upstream = upstream_port
        self._mark = mark
        self._settle = settle_seconds
        self._armed = threading.Event()
        self._lock = threading.Lock()
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self, dsn: str) -> str:
        """`dsn` pointed at the proxy, in clear."""
        parts = urlsplit(dsn)
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{self.port}"
        query = "&".join(q for q in (parts.query, "sslmode=disable", "gssencmode=disable") if q)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def arm(self) -> None:
        """Drop the answer of the next marked transaction's COMMIT (once)."""
        self._armed.set()

    def close(self) -> None:
        """Stop accepting (open connections end with their peers)."""
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            cut = threading.Event()
            threading.Thread(target=self._to_server, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, cut), daemon=True).start()

    def _to_client(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if cut.is_set():
                    return
                client.sendall(data)
        _close(server, client)

    def _to_server(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        buffer, started, loading = b"", False, False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                buffer += data
                while True:
                    if not started:  # the startup message: a length, no type byte
                        if len(buffer) < 4 or len(buffer) < struct.unpack("!I", buffer[:4])[0]:
                            break
                        size, kind = struct.unpack("!I", buffer[:4])[0], b""
                    else:
                        if len(buffer) < 5 or len(buffer) < 1 + struct.unpack("!I", buffer[1:5])[0]:
                            break
                        size, kind = 1 + struct.unpack("!I", buffer[1:5])[0], buffer[:1]
                    message, buffer = buffer[:size], buffer[size:]
                    started = True
                    loading = loading or (kind in (b"Q", b"P") and self._mark in message)
                    commit = kind == b"Q" and message[5:].lstrip().upper().startswith(b"COMMIT")
                    if commit and loading and self._take_shot():
                        cut.set()  # the server's answer is dropped from here
                        server.sendall(message)
                        time.sleep(self._settle)
                        _close(server, client)
                        return
                    if commit:
                        loading = False
                    server.sendall(message)
        _close(server, client)

    def _take_shot(self) -> bool:
        with self._lock:
            if not self._armed.is_set():
                return False
            self._armed.clear()
            self.cuts += 1
            return True


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
