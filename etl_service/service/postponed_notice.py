"""The WARNING line saying a batch was postponed, and why in one word (review 46, W46-11).

A batch whose dependency is down (the vault, OpenBao, PostgreSQL, SQS) or that failed alone is put back
through visibility (service/batch.py `_postpone`). The line names the error's class, the dependency and
counts only - never the error's text, which can carry a server's words - and is rate-limited per (class,
dependency): while an outage lasts every worker's batch, and in a batch isolated one message at a time every
message, is postponed within seconds. The first is said at once; the others within `interval_seconds` are
counted into the next line (`batches`, `messages`: since the line before). Counts a quiet end of the outage
leaves unsaid stay in the metrics (etl_messages_retried_total).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("etl_service.service.batch")  # the batch's own line, under its logger as before

POSTPONED_LINE_INTERVAL_SECONDS = 10.0
"""At most one "batch postponed" line per (error class, dependency) this often."""


class PostponedNotice:
    """Says "batch postponed" at most once per `interval_seconds` for each (error class, dependency)."""

    def __init__(
        self, interval_seconds: float = POSTPONED_LINE_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._said_at: dict[tuple[str, str], float] = {}
        self._unsaid: dict[tuple[str, str], tuple[int, int]] = {}

    def postponed(self, reason: str, dependency: str, messages: int, delay_seconds: int) -> None:
        """`messages` of a batch put back for `delay_seconds` because of an error of class `reason`."""
        key = (reason, dependency)
        with self._lock:
            batches, total = self._unsaid.get(key, (0, 0))
            batches, total = batches + 1, total + messages
            now = self._clock()
            said = self._said_at.get(key)
            if said is not None and now - said < self._interval:
                self._unsaid[key] = (batches, total)
                return
            self._said_at[key] = now
            self._unsaid.pop(key, None)
        log.warning(
            "batch postponed",
            extra={
                "reason": reason,
                "dependency": dependency,
                "messages": messages,
                "delay_s": delay_seconds,
                "batches": batches,
                "messages_since_last_line": total,
            },
        )
