"""At most `most_waiting` calls wait for their request: room is made from the client with the most waiting.

Review 21, R21-4: silent calls re-opened as they ended held every worker of the vault; now the
server lets all workers but two wait, so the last two always serve the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from vault_service.domain.errors import RequestNotSent, TooManyCallsAtOnce
from vault_service.entrypoints.request_reads import RequestReads


class _Cancelled(grpc.RpcError):
    """What a cancelled call's request iterator raises."""


class _SilentCall:
    """A call context whose request never comes until the call is cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def requests(self) -> Iterator[bytes]:
        self.cancelled.wait(5)
        raise _Cancelled()
        yield b""  # a generator


def _read_in_background(reads: RequestReads, call: _SilentCall, client: str, outcome: list[str]) -> threading.Thread:
    def read() -> None:
        try:
            reads.first(call.requests(), call, client)  # type: ignore[arg-type]  # a fake context
            outcome.append("read")
        except RequestNotSent as error:
            outcome.append(str(error))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 2
    while not condition():
        assert time.monotonic() < deadline, "the read did not start"
        time.sleep(0.001)


def _waiting(reads: RequestReads, calls: list[tuple[_SilentCall, str]]) -> list[list[str]]:
    """`calls` waiting for their request on `reads`, in this order, with what each read came to."""
    outcomes: list[list[str]] = []
    for number, (call, client) in enumerate(calls, start=1):
        outcomes.append([])
        _read_in_background(reads, call, client, outcomes[-1])
        _until(lambda n=number: len(reads._pending) == n)  # type: ignore[misc]
    return outcomes


def test_a_client_with_none_waiting_ends_the_oldest_call_of_the_most_crowded_client() -> None:
    reads = RequestReads(seconds=5, most_waiting=2)
    oldest, newer = _SilentCall(), _SilentCall()
    outcomes = _waiting(reads, [(oldest, "silent"), (newer, "silent")])
    assert reads.first(iter([b"request"]), _SilentCall(), "etl") == b"request"  # type: ignore[arg-type]
    _until(lambda: bool(outcomes[0]))
    assert oldest.cancelled.is_set() and not newer.cancelled.is_set()
    assert "another client had fewer waiting" in outcomes[0][0]
    newer.cancel()


def test_a_client_as_crowded_as_any_is_refused_and_ends_no_call() -> None:
    reads = RequestReads(seconds=5, most_waiting=2)
    calls = [(_SilentCall(), "silent"), (_SilentCall(), "etl")]
    _waiting(reads, calls)
    for client in ("silent", "another"):  # one waiting each: none is ended for a newcomer
        with pytest.raises(TooManyCallsAtOnce) as refused:
            reads.first(iter([b"request"]), _SilentCall(), client)  # type: ignore[arg-type]
        assert refused.value.retry_after > 0
    assert not any(call.cancelled.is_set() for call, _ in calls)
    for call, _ in calls:
        call.cancel()


def test_at_least_one_call_may_wait() -> None:
    with pytest.raises(ValueError):
        RequestReads(seconds=1, most_waiting=0)
