"""Every call must deliver its one request within a short bound, or the server ends it.

gRPC's Python server gives a call a worker thread before its request has arrived, and the worker
waits for it without limit. The guard serves every method as request-streaming so that it can
admit the caller first (identity, policy, share), but an admitted caller could still open calls
that never send their request: two valid certificates' silent Check calls held every worker, a
revocation freed none until the connection's maximum age (attack 20, finding 3), and two silent
calls froze the plaintext health listener (finding 1).

`RequestReads` bounds that wait: a call's first request message must arrive within
`seconds` (TOKENVAULT_REQUEST_READ_SECONDS, default REQUEST_READ_SECONDS) of its admission, else
one watchdog thread cancels the call (the client sees CANCELLED), the read raises `RequestNotSent`,
and the caller is audited and counted. The watchdog is shared by every call of a server: each
read costs two short lock holds and a dict entry, not a timer thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from vault_service.domain.errors import RequestNotSent

REQUEST_READ_SECONDS = 2.0
"""How long a call may take to deliver its request after it is admitted: far above a 12 MiB body
on a data-centre link, far below the minutes a silent call used to hold a worker."""
_TICKS_PER_BOUND = 4
"""The watchdog looks for overdue reads this many times per bound (a call ends within 1.25 bounds)."""


def first_request(requests: Iterator[Any]) -> Any | None:
    """The call's first request message (a unary client sends one and ends the stream); None when it sent none."""
    for request in requests:
        return request
    return None


class RequestReads:
    """Reads calls' first request message, ending the calls that do not deliver it within `seconds`."""

    def __init__(self, seconds: float = REQUEST_READ_SECONDS) -> None:
        if seconds <= 0:
            raise ValueError(f"the request read bound must be positive, got {seconds}")
        self.seconds = seconds
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._pending: dict[int, tuple[float, grpc.RpcContext]] = {}  # in order of deadline: one bound for all
        self._watchdog: threading.Thread | None = None

    def first(self, requests: Iterator[Any], context: grpc.RpcContext) -> Any | None:
        """The call's first request message, None when it ended its stream without one.

        Raises RequestNotSent when it did not arrive within the bound (the call is cancelled by then).
        """
        number = next(self._numbers)
        with self._lock:
            self._pending[number] = (time.monotonic() + self.seconds, context)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="request-reads", daemon=True)
                self._watchdog.start()
        try:
            request = first_request(requests)
        except grpc.RpcError:  # the call was cancelled (by the watchdog, or the client left)
            request = None
        finally:
            with self._lock:
                overdue = self._pending.pop(number, None) is None
        if overdue:
            raise RequestNotSent(
                f"the call sent no request within {self.seconds:g} s (TOKENVAULT_REQUEST_READ_SECONDS): it was ended"
            )
        return request

    def bounded(self, requests: Iterator[Any], context: grpc.RpcContext) -> Iterator[Any]:
        """`requests` of a stream, its first one read within the bound (RequestNotSent otherwise)."""
        first = self.first(requests, context)
        if first is None:
            return
        yield first
        yield from requests

    def _watch(self) -> None:
        tick = self.seconds / _TICKS_PER_BOUND
        while True:
            time.sleep(tick)
            for context in self._overdue(time.monotonic()):
                context.cancel()

    def _overdue(self, now: float) -> list[grpc.RpcContext]:
        """Take the reads past their deadline out of the pending ones (the oldest come first)."""
        overdue = []
        with self._lock:
            for number, (deadline, context) in self._pending.items():
                if deadline > now:
                    break
                overdue.append((number, context))
            for number, _ in overdue:
                del self._pending[number]
        return [context for _, context in overdue]
