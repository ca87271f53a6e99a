"""Whether the vault's TLS refuses the ETL, asked by a handshake of the ETL's own with the channel's identity (etl50).

gRPC reports a handshake the vault refuses as UNAVAILABLE, as it does the vault down: a certificate of the ETL the
vault does not accept (expired at the handshake, of a CA it does not trust) reads "Socket closed" - under TLS 1.3 the
client's handshake is over before the server checks its certificate, and the vault closes the connection without a
word - and a vault certificate ETL_TLS_CA does not verify reads "Tls handshake failed". Both were waited out as an
outage for ever, the ETL's start check alone saying so. This probe makes one TLS connection with the very bytes the
channel was opened with (ETL_TLS_CA, ETL_TLS_CERT, ETL_TLS_KEY as read at start: files renewed on disk since are not
what the channel presents), offers HTTP/2 (ALPN h2) and sends its preface:

- the vault's certificate fails verification                      -> refused (ETL_TLS_CA, ETL_VAULT_SERVER_NAME)
- a TLS alert, or the connection closed promptly before the server's first HTTP/2 frame, twice
                                                                  -> refused (ETL_TLS_CERT)
- closed late (the vault's handshake deadline: a late flight, a vault too busy) -> None: an outage
- the server's first frame arrives (it accepts the ETL)           -> None: the failure was something else
- no connection, a timeout, a close during the handshake itself   -> None: an outage, waited out as before
- the ETL stopping (`stopping` set) while the probe waits           -> None within STOP_CHECK_SECONDS

Each wait (the TCP connect, the handshake, the server's first frame; up to `timeout` s each, and a second handshake
after a prompt close) is made in slices of STOP_CHECK_SECONDS that look at the ETL's stop event, as pool_waits.py
waits for a pooled connection: a SIGTERM met a probe that took up to ~9 s more, past a short grace period. The name
lookup (getaddrinfo, which no signal or timeout of ours cuts) runs in a daemon thread waited for the same way: a
resolver that hangs (an unreachable DNS server) held a stop for the resolver's own timeout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

_T = TypeVar("_T")

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""HTTP/2's client preface and an empty SETTINGS frame: a gRPC server that accepted the handshake answers a frame."""
HANDSHAKE_MARKS = ("handshake", "socket closed", "ssl", "certificate")
"""gRPC's words for a connection that failed in or right after its TLS handshake (tokenvault_client.errors)."""
PROMPT_CLOSE_SECONDS = 0.5
"""How soon after the ETL's handshake (plus four TCP round trips) a close counts as the vault refusing its certificate.

The vault checks the certificate as its last flight arrives and closes at once. A close later than that is the
vault's own handshake deadline (TOKENVAULT_HANDSHAKE_SECONDS, from its accept): under TLS 1.3 the ETL's side of the
handshake is over before the vault has read its last flight, so a flight delayed on the way (a lost segment, a
congested link) or a vault too busy to read it in time ends the same way - an outage, not a refusal (review 50,
R50-2: the ETL exited 1 blaming a valid certificate)."""
STOP_CHECK_SECONDS = 0.25
"""How often a wait of the probe looks whether the ETL is stopping (then it ends: no diagnosis, an outage)."""


@dataclass(frozen=True)
class VaultTls:
    """Where the vault listens and the PEM bytes the ETL's channel to it was opened with."""

    address: str
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    server_name: str | None = None


def handshake_refusal(tls: VaultTls, timeout: float = 3.0, stopping: threading.Event | None = None) -> str | None:
    """What the vault's TLS refuses of the ETL's settings, in words naming them; None when it does not refuse.

    A close right after the handshake is counted only when a second connection ends the same way (a vault that
    stops between the two would not answer the second connection at all). `stopping`: the ETL's stop event; once
    set, the probe's waits end within STOP_CHECK_SECONDS and it says None (the failure stays an outage).
    """
    if not hasattr(os, "memfd_create"):  # Linux's (the ETL's image); elsewhere no diagnosis: an outage as before
        return None
    stop = stopping if stopping is not None else threading.Event()
    first = _one_handshake(tls, timeout, stop)
    if first is None or first.startswith("the vault's certificate"):
        return first
    return first if _one_handshake(tls, timeout, stop) is not None else None


class _Stopped(Exception):
    """The ETL stopped while the probe waited."""


def _one_handshake(tls: VaultTls, timeout: float, stop: threading.Event) -> str | None:
    host, _, port = tls.address.rpartition(":")
    try:
        context = _context(tls)
        started = time.monotonic()
        with _connected(host.strip("[]"), int(port), timeout, stop) as raw:
            round_trip = time.monotonic() - started  # name lookup and TCP handshake: not the vault process's load
            with context.wrap_socket(
                raw, server_hostname=tls.server_name or host.strip("[]"), do_handshake_on_connect=False
            ) as conn:
                _sliced(conn, timeout, stop, conn.do_handshake)
                conn.settimeout(timeout)
                conn.sendall(_PREFACE)
                handshake_done = time.monotonic()
                answered = _sliced(conn, timeout, stop, lambda: conn.recv(9))
                closed_after = time.monotonic() - handshake_done
    except ssl.SSLCertVerificationError as error:
        return (
            f"the vault's certificate is not one ETL_TLS_CA verifies for"
            f" {tls.server_name or host} ({error.verify_message}): check ETL_TLS_CA and ETL_VAULT_SERVER_NAME"
        )
    except ssl.SSLError as error:
        if "alert" in str(error.reason or "").lower():
            return f"the vault refused the ETL's certificate in the TLS handshake ({error.reason}): {_CERT_FIX}"
        return None  # a connection cut during the handshake (SSLEOFError, ...): an outage
    except (OSError, ValueError, _Stopped):
        return None  # not reached, timed out, reset: an outage; or the ETL stopping: no diagnosis
    if answered or closed_after > PROMPT_CLOSE_SECONDS + 4 * round_trip:
        return None  # accepted; or closed at the vault's handshake deadline, not on seeing the certificate
    return f"the vault closed the connection on seeing the ETL's certificate: {_CERT_FIX}"


def _sliced(sock: socket.socket, timeout: float, stop: threading.Event, step: Callable[[], _T]) -> _T:
    """`step()` (a handshake, a receive) waited for up to `timeout` s in slices: TimeoutError, or _Stopped once set.

    A slice that times out leaves the TLS state as it was (OpenSSL wants more to read): the next call goes on.
    """
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the vault did not answer the probe in time")
        sock.settimeout(min(STOP_CHECK_SECONDS, left))
        with contextlib.suppress(TimeoutError):
            return step()
    raise _Stopped


def _connected(host: str, port: int, timeout: float, stop: threading.Event) -> socket.socket:
    """A TCP connection to host:port (each address in turn, `timeout` s each, as socket.create_connection).

    The name is looked up in a thread of its own, waited for until `stop` is set (_looked_up).
    """
    addresses = _looked_up(stop, partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM))
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, where in addresses:
        raw = socket.socket(family, kind, proto)
        try:
            raw.setblocking(False)
            code = raw.connect_ex(where)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                _sliced(raw, timeout, stop, partial(_writable_or_timeout, raw))
                code = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            return raw
        except OSError as failed:
            raw.close()
            error = failed
        except BaseException:
            raw.close()
            raise
    raise error


def _looked_up(stop: threading.Event, lookup: Callable[[], _T]) -> _T:
    """`lookup()` (the name lookup: getaddrinfo), its answer or error as is; _Stopped once `stop` is set.

    The lookup blocks in the C library, where nothing of ours cuts it: it runs in a daemon thread (not an executor's,
    whose threads the interpreter joins at exit) that the probe waits for in slices of STOP_CHECK_SECONDS. Left
    behind by a stop, it ends at the resolver's own timeout and does not keep the process alive.
    """
    if stop.is_set():
        raise _Stopped
    done = threading.Event()
    answers: list[_T] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            answers.append(lookup())
        except Exception as failed:  # gaierror, UnicodeError of an IDNA name: raised in the probe's thread below
            errors.append(failed)
        finally:
            done.set()

    threading.Thread(target=run, name="tokenvault-etl-tls-probe-lookup", daemon=True).start()
    while not done.wait(STOP_CHECK_SECONDS):
        if stop.is_set():
            raise _Stopped
    if errors:
        raise errors[0]
    return answers[0]


def _writable_or_timeout(raw: socket.socket) -> None:
    """Waits one slice (the socket's timeout) for a connect to end; TimeoutError when it has not.

    Asked of the system's selector (epoll on Linux), not select.select: that one raises ValueError for a descriptor
    of 1024 or more (a process with that many files open, its limit raised as containers often have it), and the
    probe then said "an outage" without looking (review 51, R51-7).
    """
    with selectors.DefaultSelector() as selector:
        selector.register(raw, selectors.EVENT_WRITE)
        if not selector.select(raw.gettimeout()):
            raise TimeoutError


_CERT_FIX = (
    "ETL_TLS_CERT is expired or not of the vault's client CA (TOKENVAULT_TLS_CLIENT_CA) - renew it, then restart"
    " the ETL (it reads ETL_TLS_CERT and ETL_TLS_KEY at start)"
)


def _context(tls: VaultTls) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls.ca_pem.decode("ascii", "replace"))
    context.set_alpn_protocols(["h2"])
    with _in_memory(tls.cert_pem) as cert, _in_memory(tls.key_pem) as key:
        context.load_cert_chain(cert, key)
    return context


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path to `data` that is never on a disk (a memfd): ssl loads a certificate and key only from a path."""
    fd = os.memfd_create("tokenvault-etl-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
