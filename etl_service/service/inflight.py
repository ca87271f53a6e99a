"""The messages this consumer holds, bounded (backpressure) and with their lease deadlines.

A receiver reserves room before it receives, so the consumer never holds more than
`capacity` messages. Every held message carries the time its SQS visibility runs out; the
heartbeat asks for those close to it and extends them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from etl_service.domain.messages import QueueMessage


class InFlight:
    """Thread-safe ledger of received messages not yet deleted or released."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._reserved = 0
        self._deadlines: dict[str, tuple[QueueMessage, float]] = {}
        self._changed = threading.Condition()

    def reserve(self, count: int, stop: threading.Event, timeout: float = 0.5) -> bool:
        """Wait up to `timeout` for room for `count` more messages; True when reserved."""
        with self._changed:
            ready = self._changed.wait_for(
                lambda: stop.is_set() or self._held() + count <= self._capacity, timeout=timeout
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
                self._deadlines[message.receipt_handle] = (message, deadline)
            self._changed.notify_all()

    def cancel(self, reserved: int) -> None:
        """Give back a reservation that received nothing."""
        self.admit(reserved, [], 0)

    def settle(self, messages: Sequence[QueueMessage]) -> None:
        """Forget messages that were deleted, released or postponed."""
        with self._changed:
            for message in messages:
                self._deadlines.pop(message.receipt_handle, None)
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

    def held(self) -> int:
        """Messages held right now (received and not yet settled)."""
        with self._changed:
            return len(self._deadlines)

    def _held(self) -> int:
        return len(self._deadlines) + self._reserved
