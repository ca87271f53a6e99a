"""A fake PostgreSQL server that refuses every start-up with a FATAL of a given SQLSTATE, in a process of its own.

As the server does for a connection limit (53300), no CONNECT privilege (42501), a role that may
not log in (28000) or a shutdown (57P03); its severity and message in Russian, as a server's
lc_messages may have them. A process, not a thread: psycopg's binary build holds the GIL through
libpq's PQping, so a server thread in the pinging process could not answer.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import struct
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized

SSL_REQUEST, GSS_REQUEST = 80877103, 80877104


def _error_response(sqlstate: str) -> bytes:
    """A FATAL ErrorResponse: severity (localized and not), SQLSTATE, message."""
    russian_fatal = "\u0412\u0410\u0416\u041d\u041e"
    russian_refused = "\u043e\u0442\u043a\u0430\u0437\u0430\u043d\u043e"
    fields = ["S" + russian_fatal, "VFATAL", "C" + sqlstate, "M" + russian_refused]
    body = b"".join(field.encode() + b"\0" for field in fields) + b"\0"
    return b"E" + struct.pack("!i", 4 + len(body)) + body


def _serve(server: socket.socket, sqlstate: str, startups: Synchronized) -> None:  # type: ignore[type-arg]
    """Refuse every start-up on `server`, counting them in `startups`, until killed."""
    while True:
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError, struct.error):
            length, code = struct.unpack("!ii", conn.recv(8, socket.MSG_WAITALL))
            while code in (SSL_REQUEST, GSS_REQUEST):
                conn.sendall(b"N")  # no TLS, no GSS
                length, code = struct.unpack("!ii", conn.recv(8, socket.MSG_WAITALL))
            conn.recv(length - 8, socket.MSG_WAITALL)  # the start-up parameters
            with startups.get_lock():
                startups.value += 1
            conn.sendall(_error_response(sqlstate))


@contextlib.contextmanager
def refusing(sqlstate: str) -> Iterator[tuple[int, Synchronized]]:  # type: ignore[type-arg]
    """A loopback server refusing each start-up with FATAL `sqlstate`: its port, and the count of start-ups."""
    context = multiprocessing.get_context("spawn")
    startups = context.Value("i", 0)
    with socket.create_server(("127.0.0.1", 0)) as server:
        process = context.Process(target=_serve, args=(server, sqlstate, startups), daemon=True)
        process.start()
        try:
            yield server.getsockname()[1], startups
        finally:
            process.kill()
            process.join()
