"""A fake PostgreSQL server on loopback that asks every client for its password and records what it sends.

An impostor, as another local user (or a host that is not the database) would run it: it answers
SSLRequest with TLS when given a certificate (else `N`, as does GSSENCRequest), then every
StartupMessage with a password request, and records the type byte of the client's next message
('p': the password). Used by test_postgres_require_auth.py and test_postgres_verify_full.py.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from devstack.certs import CertPair

SSL_REQUEST, GSS_REQUEST = 80877103, 80877104
CLEARTEXT, MD5 = 3, 5
"""AuthenticationCleartextPassword, AuthenticationMD5Password."""


@dataclass
class Impostor:
    """What the fake server asks for (`auth`), its TLS certificate (`cert`, or none), and what it got."""

    auth: int = CLEARTEXT
    cert: CertPair | None = None
    port: int = 0
    startups: int = 0
    replies: list[bytes] = field(default_factory=list)
    """The type byte of each message a client sent after the password request ('p': a password)."""


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve_one(conn: socket.socket, impostor: Impostor) -> None:
    length, code = struct.unpack("!ii", _recv_exact(conn, 8))
    while code in (SSL_REQUEST, GSS_REQUEST):
        if code == SSL_REQUEST and impostor.cert is not None:
            conn.sendall(b"S")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(impostor.cert.cert, impostor.cert.key)
            conn = context.wrap_socket(conn, server_side=True)  # fails when the client refuses the certificate
        else:
            conn.sendall(b"N")  # no TLS, no GSS: as a plain listener would answer
        length, code = struct.unpack("!ii", _recv_exact(conn, 8))
    _recv_exact(conn, length - 8)  # the startup parameters (user, database)
    impostor.startups += 1
    salt = b"salt" if impostor.auth == MD5 else b""
    conn.sendall(b"R" + struct.pack("!ii", 8 + len(salt), impostor.auth) + salt)
    reply = conn.recv(1)
    if reply:
        impostor.replies.append(reply)


@contextlib.contextmanager
def serving(impostor: Impostor) -> Iterator[Impostor]:
    """Serve `impostor` on a free loopback port (set in `impostor.port`) until the block ends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    impostor.port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError, EOFError):
                conn.settimeout(5)
                _serve_one(conn, impostor)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield impostor
    finally:
        stop.set()
        thread.join(5)
        server.close()
