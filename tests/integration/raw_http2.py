"""A few HTTP/2 frames written and read by hand, for tests of what a client that ignores the rules can do.

gRPC's own client obeys the server's SETTINGS (it queues calls beyond MAX_CONCURRENT_STREAMS), so
a test of what the server does to one that does not must speak the frames itself. Only what those
tests need: the preface, SETTINGS (and its ACK), PING, HEADERS with literal header fields, reading
frames back.
"""

from __future__ import annotations

import socket
import ssl
import struct
from pathlib import Path

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x1, 0x3, 0x4, 0x6, 0x7
ACK = 0x1
"""SETTINGS' and PING's flag."""
END_HEADERS = 0x4
MAX_CONCURRENT_STREAMS = 0x3
REFUSED_STREAM = 0x7


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def literal_headers(headers: list[tuple[str, str]]) -> bytes:
    """An HPACK block of literal fields without indexing, new names, no Huffman (each part under 127 bytes)."""
    block = b""
    for name, value in headers:
        block += b"\x00" + bytes((len(name),)) + name.encode() + bytes((len(value),)) + value.encode()
    return block


def tls_connection(port: int, ca: Path, cert: Path, key: Path) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:`port` with a client certificate, speaking h2 (ALPN)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


class FrameReader:
    """Frames read off a socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def next(self) -> tuple[int, int, int, bytes] | None:
        """(type, flags, stream id, payload), or None once the peer closed the connection."""
        while True:
            if len(self._buffer) >= 9:
                length = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) >= 9 + length:
                    kind, flags = self._buffer[3], self._buffer[4]
                    stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
                    payload, self._buffer = self._buffer[9 : 9 + length], self._buffer[9 + length :]
                    return kind, flags, stream, payload
            try:
                data = self._sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self._buffer += data


def settings_of(payload: bytes) -> dict[int, int]:
    """A SETTINGS frame's parameters by identifier."""
    return {
        int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(payload[i + 2 : i + 6], "big")
        for i in range(0, len(payload), 6)
    }
