"""A watchdog on the audit upkeep's rounds, timed in the vault's own process (attack 17, findings 2 and 3).

The database owner can make a round wait without end: a lock on a table a round's statement
needs (`LOCK TABLE vault.audit_checkpoints IN SHARE MODE` holds the checkpoint INSERT), or a
function of his on its path (a row-level-security policy, a view) that sleeps and catches
`query_canceled` - what a server-side `statement_timeout` and a cancel request
(`pg_cancel_backend`) raise, so both are trapped. A hanging round was counted nowhere, and the
rows it had checked were forgotten before their checkpoint was exported.

So the round is also timed here, on the client side, where nothing in the database reaches:
`RoundWatchdog` calls `on_overrun` once a round has gone `limit` seconds without progress (its
start, or the last `progress()`: the upkeep calls it after each page of its segment read, so what
is bounded is what the database owner can hold - one statement - and not the length of a segment
other replicas keep extending: review 18, R18-4), or has run `ceiling` seconds in all, and again
every `repeat` seconds while it still runs (each counted as a failed round, so the alert on failing
rounds stays up). The upkeep then logs the ids it has not checked and closes the round's
database connections at the socket, so the statement raises at once in the round's thread
and the next round starts on a fresh connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RoundWatchdog:
    """Times the round in progress (`begin`/`progress`/`end`) and reports it, on a thread of its own, once it overruns.

    `on_overrun(seconds, first)`: the round has gone `seconds` without progress, past `limit`, or
    has run `seconds` in all, past `ceiling` (None: no bound on the whole round) (`first`: the
    first report of this round). Thread-safe; `check` is one look, for the thread and for tests.
    """

    def __init__(
        self,
        limit: float,
        on_overrun: Callable[[float, bool], None],
        repeat: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        ceiling: float | None = None,
    ) -> None:
        self._limit = limit
        self._ceiling = ceiling
        self._repeat = repeat if repeat is not None else limit
        self._on_overrun = on_overrun
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None  # when the round in progress began (None: none runs)
        self._progressed = 0.0  # when the round in progress began or last made progress
        self._overruns = 0  # times the round in progress was reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """A round starts now."""
        with self._lock:
            self._started, self._overruns = self._clock(), 0
            self._progressed = self._started

    def progress(self) -> None:
        """The round in progress got on (a statement completed): `limit` counts from now again."""
        with self._lock:
            self._progressed = self._clock()

    def end(self) -> bool:
        """The round ended; whether it was reported as overrunning (so counted as failed already)."""
        with self._lock:
            self._started = None
            return self._overruns > 0

    def check(self) -> None:
        """Report the round in progress if it has gone past `limit` without progress, or past `ceiling` in all.

        And `repeat` more seconds per earlier report of the round.
        """
        with self._lock:
            if self._started is None:
                return
            now, late = self._clock(), self._overruns * self._repeat
            running = now - self._progressed
            if running < self._limit + late:
                running = now - self._started
                if self._ceiling is None or running < self._ceiling + late:
                    return
            self._overruns += 1
            first = self._overruns == 1
        self._on_overrun(running, first)

    def start(self, tick: float) -> None:
        """Look every `tick` seconds on a daemon thread until `stop()`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(tick,), name="audit-upkeep-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self, tick: float) -> None:
        while not self._stop.wait(tick):
            try:
                self.check()
            except Exception as error:  # the watchdog must outlive any one report
                log.error("the audit upkeep's watchdog could not report a round (%s)", type(error).__name__)
