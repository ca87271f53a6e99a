"""Group commit without a writer thread: concurrent callers share one write.

The first caller to arrive while no write is under way leads: it writes every item waiting
at that moment (its own first) and returns. Callers arriving meanwhile wait; when the write
ends, each of them learns its outcome, and the oldest caller still waiting leads the next
group. A lone caller therefore writes in its own thread with no hand-over at all, and under
concurrency one write serves many calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Waiter(Generic[T]):
    """One caller's item, and how it learns its outcome: `ready` is released when decided."""

    __slots__ = ("error", "item", "leads", "ready")

    def __init__(self, item: T) -> None:
        self.item = item
        self.ready = threading.Lock()
        self.ready.acquire()
        self.error: BaseException | None = None
        self.leads = False


class GroupCommitter(Generic[T]):
    """Calls `write(items)` for items from concurrent callers, one write at a time, in groups."""

    def __init__(self, write: Callable[[list[T]], None], max_group: int) -> None:
        self._write = write
        self._max_group = max_group
        self._lock = threading.Lock()
        self._waiting: list[_Waiter[T]] = []
        self._writing = False

    def submit(self, item: T) -> None:
        """Return once `item` is written; raise the write's error if its group failed."""
        me = _Waiter(item)
        with self._lock:
            self._waiting.append(me)
            leads = not self._writing
            self._writing = True
        if not leads:
            me.ready.acquire()  # until our group is written, or the lead passes to us
            if not me.leads:
                if me.error is not None:
                    raise me.error
                return
        self._lead(me)
        if me.error is not None:
            raise me.error

    def _lead(self, me: _Waiter[T]) -> None:
        with self._lock:
            group = self._waiting[: self._max_group]  # starts with `me`: the oldest waiter
            del self._waiting[: self._max_group]
        error: BaseException | None = None
        try:
            self._write([waiter.item for waiter in group])
        except BaseException as failure:  # handed to every caller of the group
            error = failure
        with self._lock:
            successor = self._waiting[0] if self._waiting else None
            if successor is None:
                self._writing = False
            else:
                successor.leads = True
        for waiter in group:
            waiter.error = error
            if waiter is not me:
                waiter.ready.release()
        if successor is not None:
            successor.ready.release()
