"""Pause receiving while a dependency is down, instead of burning receive counts on it.

After a batch fails because the vault service or Postgres is unavailable, the gate closes.
Receivers then wait; one of them probes the dependencies (the vault's health check, Postgres taking
writes, OpenBao signing a probe: bootstrap's probe) with a
growing pause, and the first success opens the gate again. Messages are received again only
when they can be processed, so an outage does not push good messages toward the DLQ.

Two failures a probe cannot see (attack 19, finding 2):
- a metered refusal (the vault's quota, `Throttled`): the vault is healthy, so the gate stays
  closed until the vault's `retry-after-ms` has passed before it even probes;
- a failure that comes back as soon as the gate opens (a database trigger refusing every insert
  while `SELECT 1` passes): a failure reported within RELAPSE_SECONDS of reopening starts from
  twice the last pause, not the first, so receives are spent ever more slowly (up to `max_pause`).
On a message's last receive the batch dead-letters it sealed, with a reason (service/batch.py).
A probe that meets a misconfiguration (the vault refusing the ETL's certificate on health, expired
or revoked while the gate was closed) raises it from `wait_open`: the run stops, as for any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.outcomes import ConsumerObserver, NoObserver

log = logging.getLogger(__name__)

RELAPSE_SECONDS = 30.0
"""A failure reported this soon after the gate reopened continues the last outage's growing pause."""


class DependencyGate:
    """Open while dependencies work; closed (receivers wait) from a failure until a probe passes."""

    def __init__(
        self,
        probe: Callable[[], None],
        observer: ConsumerObserver | None = None,
        first_pause: float = 0.5,
        max_pause: float = 10.0,
    ) -> None:
        self._probe = probe
        self._observer = observer or NoObserver()
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._lock = threading.Lock()
        self._down: str | None = None
        self._down_since = 0.0
        self._pause = first_pause
        self._next_probe = 0.0
        self._probing = False
        self._reopened_at: float | None = None

    @property
    def down(self) -> str | None:
        """The dependency that is down, or None while the gate is open."""
        return self._down

    def report_failure(self, dependency: str, retry_after: float = 0.0) -> None:
        """Close the gate: `dependency` failed a batch; no probe before `retry_after` seconds (the vault's quota)."""
        with self._lock:
            now = time.monotonic()
            if self._down is not None:
                self._next_probe = max(self._next_probe, now + retry_after)
                return
            relapse = self._reopened_at is not None and now - self._reopened_at < RELAPSE_SECONDS
            self._pause = min(self._pause * 2, self._max_pause) if relapse else self._first_pause
            self._down = dependency
            self._down_since = now
            self._next_probe = now + max(self._pause, retry_after)
        log.warning(
            "dependency unavailable; receiving paused",
            extra={"dependency": dependency, "pause_s": round(max(self._pause, retry_after), 1)},
        )
        self._observer.dependency_changed(dependency, up=False)

    def wait_open(self, stop: threading.Event) -> bool:
        """Return True once the gate is open, or False if `stop` is set first.

        Raises Misconfigured when the probe does (a refused identity or permission: retrying cannot
        help), for the caller to stop the run as any misconfiguration does (review 20, R20-7).
        """
        while not stop.is_set():
            with self._lock:
                if self._down is None:
                    return True
                probe_now = not self._probing and time.monotonic() >= self._next_probe
                self._probing = self._probing or probe_now
            if probe_now:
                self._run_probe()
            else:
                stop.wait(0.1)
        return False

    def _run_probe(self) -> None:
        try:
            self._probe()
            healthy = True
        except DependencyDown:
            healthy = False
        except Misconfigured:  # the gate stays closed; the caller stops the run
            with self._lock:
                self._probing = False
                self._next_probe = time.monotonic() + self._pause
            raise
        with self._lock:
            self._probing = False
            dependency, outage = self._down, time.monotonic() - self._down_since
            if healthy:
                self._down = None
                self._reopened_at = time.monotonic()
            else:
                self._pause = min(self._pause * 2, self._max_pause)
                self._next_probe = time.monotonic() + self._pause
        if healthy and dependency is not None:
            log.info("dependencies answer again; receiving resumed", extra={"outage_s": round(outage, 1)})
            self._observer.dependency_changed(dependency, up=True)
