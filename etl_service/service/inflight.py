"""The messages this consumer holds, bounded (backpressure) and with their lease deadlines.

A receiver reserves room before it receives, so the consumer never holds more than
`capacity` messages. Every held message carries the time its SQS visibility runs out; the
lease keeper asks for those close to it and extends them.

The capacity adapts (`adapt`): a process holds no more than it can finish within half a
lease at the rate it has been settling messages, from a floor of a few batches up to the
configured maximum. A process killed in a crash loop then strands few messages for a lease
each time, instead of thousands whose receive counts all move toward the DLQ.

The bodies held are bounded too (`max_bytes`, MAX_HELD_BODY_BYTES): no receive starts while they
reach it. Counted alone, a flood of bodies near SQS's 256 KiB (refused fast as too large, so the
settle rate and the capacity grew) took a drain to 317 MiB resident with 1,200 of them queued, past
the ETL pod's 256 MiB limit: an OOM kill costs every message in hand a receive (chaos 49, C49-6).
A body is counted by the memory its str takes (`body_memory`), not its characters: CPython holds a
str of characters past U+FFFF at 4 bytes each, so a character bound let bodies of emoji hold ~4x
the memory and the same flood peak at 258-265 MiB (review 49, R49-6).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence

from etl_service.domain.messages import QueueMessage

MAX_HELD_BODY_BYTES = 8 * 1024 * 1024
"""The most body memory held before receiving waits (at ~350 bytes a login event: far above any count bound)."""


def body_memory(message: QueueMessage) -> int:
    """The bytes the message's body takes in this process (1, 2 or 4 a character by its widest, plus the header)."""
    return sys.getsizeof(message.body)


class InFlight:
    """Thread-safe ledger of received messages not yet deleted or released."""

    def __init__(self, capacity: int, floor: int | None = None, max_bytes: int = MAX_HELD_BODY_BYTES) -> None:
        """`max_bytes`: no reservation while the held bodies reach it (a receive may pass it by one receive's)."""
        self._max_bytes = max_bytes
        self._bytes = 0
        self._max_capacity = capacity
        self._floor = min(floor or capacity, capacity)
        self._capacity = self._floor
        self._reserved = 0
        self._settled = 0
        self._deadlines: dict[str, tuple[QueueMessage, float]] = {}
        self._changed = threading.Condition()

    @property
    def capacity(self) -> int:
        """How many messages may be held right now."""
        return self._capacity

    @property
    def settled_total(self) -> int:
        """Messages settled since start (for the settle rate)."""
        return self._settled

    def adapt(self, settle_rate: float, lease_seconds: float) -> None:
        """Hold at most what `settle_rate` finishes within half a lease (between floor and maximum)."""
        wanted = int(settle_rate * lease_seconds / 2)
        with self._changed:
            self._capacity = max(self._floor, min(self._max_capacity, wanted))
            self._changed.notify_all()

    def reserve(self, count: int, stop: threading.Event, timeout: float = 0.5) -> bool:
        """Wait up to `timeout` for room for `count` more messages; True when reserved."""
        with self._changed:
            ready = self._changed.wait_for(
                lambda: stop.is_set() or (self._held() + count <= self._capacity and self._bytes < self._max_bytes),
                timeout=timeout,
            )
            if not ready or stop.is_set():
                return False
            self._reserved += count
            return True

    def admit(self, reserved: int, messages: Sequence[QueueMessage], lease_seconds: float) -> None:
        """Turn a reservation into held messages (fewer may have arrived than were reserved)."""
        deadline = time.monotonic() + lease_seconds
        with self._changed:
            self._reserved -= reserved
            for message in messages:
                if message.receipt_handle not in self._deadlines:
                    self._bytes += body_memory(message)
                self._deadlines[message.receipt_handle] = (message, deadline)
            self._changed.notify_all()

    def cancel(self, reserved: int) -> None:
        """Give back a reservation that received nothing."""
        self.admit(reserved, [], 0)

    def settle(self, messages: Sequence[QueueMessage]) -> None:
        """Forget messages that were deleted, released or postponed."""
        with self._changed:
            for message in messages:
                if (held := self._deadlines.pop(message.receipt_handle, None)) is not None:
                    self._settled += 1
                    self._bytes -= body_memory(held[0])
            self._changed.notify_all()

    def expiring(self, within_seconds: float) -> list[QueueMessage]:
        """Held messages whose lease ends within `within_seconds`."""
        limit = time.monotonic() + within_seconds
        with self._changed:
            return [message for message, deadline in self._deadlines.values() if deadline <= limit]

    def extended(self, messages: Sequence[QueueMessage], lease_seconds: float) -> None:
        """Record that the lease of `messages` now runs `lease_seconds` from now."""
        deadline = time.monotonic() + lease_seconds
        with self._changed:
            for message in messages:
                if message.receipt_handle in self._deadlines:
                    self._deadlines[message.receipt_handle] = (message, deadline)

    def still_held(self, receipt_handles: set[str]) -> int:
        """How many of these receipt handles are still held (not settled meanwhile)."""
        with self._changed:
            return sum(1 for handle in receipt_handles if handle in self._deadlines)

    def held_messages(self) -> list[QueueMessage]:
        """Every message held right now (to release them at a stop)."""
        with self._changed:
            return [message for message, _ in self._deadlines.values()]

    def held_bytes(self) -> int:
        """The memory the bodies held right now take (body_memory)."""
        with self._changed:
            return self._bytes

    def held(self) -> int:
        """Messages held right now (received and not yet settled)."""
        with self._changed:
            return len(self._deadlines)

    def _held(self) -> int:
        return len(self._deadlines) + self._reserved
