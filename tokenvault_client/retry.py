"""Retrying a call: backoff for an unavailable vault, the server's own wait for a rate limit."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tokenvault_client.errors import DeadlineExceeded, RateLimited, Unavailable, VaultClientError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry one call."""

    max_attempts: int = 5
    """Attempts per call for an unavailable vault or an exceeded deadline (1: never retry)."""
    initial_backoff: float = 0.2
    """Seconds before the first retry; doubles each time up to `max_backoff` (with jitter)."""
    max_backoff: float = 5.0
    """Longest wait between two attempts after an outage."""
    max_rate_limit_wait: float = 120.0
    """Longest total wait for one call being rate-limited; the server says how long each wait is."""

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return float(ceiling * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret


NO_RETRY = RetryPolicy(max_attempts=1, max_rate_limit_wait=0.0)
"""Fail on the first error."""


Sleep = Callable[[float], object]
"""Waits the given seconds. A true result means the wait was cut short - the caller is stopping - and
the client raises the error it was waiting out instead of trying again: `threading.Event.wait` of a
stop event is such a sleep (True once the event is set); `time.sleep` (None) is never cut short."""


def call_with_retry(
    call: Callable[[], T],
    policy: RetryPolicy,
    sleep: Sleep = time.sleep,
    on_wait: Callable[[VaultClientError, float], None] | None = None,
    splittable: bool = False,
) -> T:
    """`call()`, retried per `policy`; raises the last typed error when giving up.

    A rate limit that says the call itself is too big is raised at once: only splitting the
    call helps. When the caller can split (`splittable`), a call refused a second time in a row
    after waiting as told is raised too, marked `repeated`. `on_wait(error, seconds)` is told
    before every wait; a wait `sleep` cuts short (see Sleep) raises the error waited for.
    """
    attempt, waited_for_rate, refusals, nothing_stored = 0, 0.0, 0, True
    while True:
        attempt += 1
        try:
            return call()
        except VaultClientError as error:
            # the vault's "stored nothing" (a Tokenize) holds for the call only if every attempt of it said so
            nothing_stored = error.nothing_stored = nothing_stored and error.nothing_stored
            if not isinstance(error, RateLimited | Unavailable | DeadlineExceeded):
                raise
            if isinstance(error, RateLimited):
                refusals += 1
                error.repeated = splittable and refusals > 1
                if error.call_too_big or waited_for_rate + error.retry_after > policy.max_rate_limit_wait:
                    raise
                wait: float = error.retry_after
                waited_for_rate += wait
            else:
                refusals = 0
                if attempt >= policy.max_attempts:
                    raise
                wait = policy.backoff(attempt)
                log.info("vault call failed (%s); retrying in %.2f s", error.code.name, wait)
            waiting_for: VaultClientError = error
        if on_wait:
            on_wait(waiting_for, wait)
        if sleep(wait):  # cut short: the caller is stopping
            raise waiting_for
