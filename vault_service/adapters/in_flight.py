"""Keys being written by one call of this process, so that a concurrent call waits instead of racing it.

Two calls that issue the same new value at once (the ETL's workers see the same device or
address in batches milliseconds apart) would both insert it; the database keeps one and the
other insert fails or is skipped. A call first `claim`s the keys it is about to write: the keys
another call of this process already claimed are not handed to it, and it learns whom to wait
for. Waiting happens only after a call has written and released its own claims, so two calls
never wait for each other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NamedTuple


class Claim(NamedTuple):
    """What `claim` gave a call: the keys it now writes, and the writes of others to wait for."""

    mine: frozenset[bytes]
    others: frozenset[threading.Event]


class InFlight:
    """The keys under write by calls of this process, each with the event its writer sets when done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writers: dict[bytes, threading.Event] = {}

    def claim(self, keys: Iterable[bytes], done: threading.Event) -> Claim:
        """Claim the keys nobody else is writing, for the writer that will set `done`."""
        mine: set[bytes] = set()
        others: set[threading.Event] = set()
        with self._lock:
            writers = self._writers
            for key in keys:
                writer = writers.get(key)
                if writer is None:
                    writers[key] = done
                    mine.add(key)
                elif writer is not done:
                    others.add(writer)
        return Claim(frozenset(mine), frozenset(others))

    def release(self, claim: Claim, done: threading.Event) -> None:
        """Give the claimed keys up and wake whoever waits for them (call once the write has ended)."""
        with self._lock:
            for key in claim.mine:
                del self._writers[key]
        done.set()

    def __len__(self) -> int:
        return len(self._writers)
