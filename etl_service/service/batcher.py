"""Grouping received messages into batches by size and age: pure, no threads, no clock of its own.

The consumer feeds it what receivers deliver and asks, with the current time, which batches
are ready: a full one at once, a partial one once its oldest message has waited
`max_age_seconds`, everything at a stop.
"""

from __future__ import annotations

from collections.abc import Callable

from etl_service.domain.messages import QueueMessage

Batch = list[QueueMessage]


class Batcher:
    """Accumulates messages; hands out batches of at most `size`."""

    def __init__(self, size: int, max_age_seconds: float) -> None:
        self._size = size
        self._max_age = max_age_seconds
        self._pending: list[QueueMessage] = []
        self._oldest = 0.0

    @property
    def pending(self) -> int:
        """Messages waiting for a batch."""
        return len(self._pending)

    def add(self, messages: list[QueueMessage], now: float) -> list[Batch]:
        """Take `messages` (received at `now`); return the full batches they complete."""
        if not self._pending:
            self._oldest = now
        self._pending += messages
        return self._take(lambda: len(self._pending) >= self._size, now)

    def due(self, now: float) -> list[Batch]:
        """The partial batch whose oldest message has waited long enough, if any."""
        return self._take(lambda: bool(self._pending) and now - self._oldest >= self._max_age, now)

    def flush(self, now: float) -> list[Batch]:
        """Everything pending, in batches (at a stop)."""
        return self._take(lambda: bool(self._pending), now)

    def seconds_until_due(self, now: float, idle: float) -> float:
        """How long the consumer may wait for more messages before a partial batch is due."""
        if not self._pending:
            return idle
        return max(self._oldest + self._max_age - now, 0.0)

    def _take(self, ready: Callable[[], bool], now: float) -> list[Batch]:
        batches = []
        while ready():
            batch, self._pending = self._pending[: self._size], self._pending[self._size :]
            batches.append(batch)
            self._oldest = now
        return batches
