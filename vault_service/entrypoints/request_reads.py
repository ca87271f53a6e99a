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

The bound alone let silent calls hold every worker: two certificates re-opening theirs as they
ended kept all workers waiting and gRPC's queue full, and every honest call was refused at the
door (review 21, R21-4). So at most `most_waiting` calls wait for their request at once (the
server sets it two below its workers, which then always serve the queue). A call that would be
one more ends the oldest waiting call of the client with the most calls waiting, when that client
has at least two more waiting than the newcomer's client (that call gets the same
`RequestNotSent`); otherwise the newcomer is refused (`TooManyCallsAtOnce`, retry-after). So a
client with at most one call waiting is never the one ended, one with none is admitted while any
client has two waiting, and silent calls refused for the room do not free a worker for more of
their own (no churn).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc

from vault_service.domain.errors import RequestNotSent, TooManyCallsAtOnce

REQUEST_READ_SECONDS = 2.0
"""How long a call may take to deliver its request after it is admitted: far above a 12 MiB body
on a data-centre link, far below the minutes a silent call used to hold a worker."""
_TICKS_PER_BOUND = 4
"""The watchdog looks for overdue reads this many times per bound (a call ends within 1.25 bounds)."""
RETRY_AFTER_SECONDS = 0.1
"""What a call refused for want of room to wait is told to wait."""


def first_request(requests: Iterator[Any]) -> Any | None:
    """The call's first request message (a unary client sends one and ends the stream); None when it sent none."""
    for request in requests:
        return request
    return None


class RequestReads:
    """Reads calls' first request message, ending the calls that do not deliver it within `seconds`."""

    def __init__(self, seconds: float = REQUEST_READ_SECONDS, most_waiting: int | None = None) -> None:
        """`most_waiting`: how many calls may wait for their request at once (None: no limit)."""
        if seconds <= 0:
            raise ValueError(f"the request read bound must be positive, got {seconds}")
        if most_waiting is not None and most_waiting < 1:
            raise ValueError(f"at least one call must be able to wait for its request, got {most_waiting}")
        self.seconds = seconds
        self.most_waiting = most_waiting
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._pending: dict[int, tuple[float, grpc.RpcContext, str]] = {}  # in order of deadline: one bound for all
        self._waiting: Counter[str] = Counter()  # pending reads per client
        self._made_room: set[int] = set()  # calls ended for another client's, not yet told
        self._watchdog: threading.Thread | None = None

    def first(self, requests: Iterator[Any], context: grpc.RpcContext, client: str = "") -> Any | None:
        """The call's first request message, None when it ended its stream without one.

        Raises TooManyCallsAtOnce, before reading, when no call may wait for `client`'s; RequestNotSent
        when the request did not arrive within the bound, or the call was ended to make room for another
        client's (the call is cancelled by then).
        """
        number = next(self._numbers)
        with self._lock:
            ended = self._make_room(client)
            self._pending[number] = (time.monotonic() + self.seconds, context, client)
            self._waiting[client] += 1
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="request-reads", daemon=True)
                self._watchdog.start()
        if ended is not None:
            ended.cancel()
        try:
            request = first_request(requests)
        except grpc.RpcError:  # the call was cancelled (by the watchdog, or the client left)
            request = None
        finally:
            with self._lock:
                overdue = self._take(number) is None
                made_room = overdue and number in self._made_room
                if made_room:
                    self._made_room.discard(number)
        if made_room:
            raise RequestNotSent(
                f"the call had sent no request when {self.most_waiting} calls were waiting for theirs, the most"
                " this server lets wait at once, and another client had fewer waiting: it was ended"
            )
        if overdue:
            raise RequestNotSent(
                f"the call sent no request within {self.seconds:g} s (TOKENVAULT_REQUEST_READ_SECONDS): it was ended"
            )
        return request

    def bounded(self, requests: Iterator[Any], context: grpc.RpcContext, client: str = "") -> Iterator[Any]:
        """`requests` of a stream, its first one read within the bound (as `first` reads it)."""
        first = self.first(requests, context, client)
        if first is None:
            return
        yield first
        yield from requests

    def _make_room(self, client: str) -> grpc.RpcContext | None:
        """With the lock held: the call to end so that one of `client`'s may wait, taken out of the pending ones.

        None when there is room; TooManyCallsAtOnce when no client has two more calls waiting than `client`.
        """
        if self.most_waiting is None or len(self._pending) < self.most_waiting:
            return None
        crowded, most = self._waiting.most_common(1)[0]
        if most < self._waiting[client] + 2:
            raise TooManyCallsAtOnce(
                f"{len(self._pending)} calls are waiting for their request, the most this vault process lets"
                f" wait at once, and client {client!r} has nearly as many waiting as any other: retry after"
                f" {RETRY_AFTER_SECONDS:g} s (retry-after-ms), and send each call's request with it",
                retry_after=RETRY_AFTER_SECONDS,
            )
        oldest = next(number for number, (_, _, owner) in self._pending.items() if owner == crowded)
        self._made_room.add(oldest)
        return self._take(oldest)

    def _take(self, number: int) -> grpc.RpcContext | None:
        """With the lock held: a pending read taken out (its context), None when it is no longer pending."""
        entry = self._pending.pop(number, None)
        if entry is None:
            return None
        client = entry[2]
        self._waiting[client] -= 1
        if self._waiting[client] <= 0:
            del self._waiting[client]
        return entry[1]

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
            for number, (deadline, _, _) in self._pending.items():
                if deadline > now:
                    break
                overdue.append(number)
            contexts = [self._take(number) for number in overdue]
        return [context for context in contexts if context is not None]
