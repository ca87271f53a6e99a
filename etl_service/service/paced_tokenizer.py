"""The vault's quota paces the ETL within a receive: a metered Tokenize is tried again after its retry-after.

A quota is not an outage (attack 19, finding 2): postponing the batch would make SQS count one more
receive toward the redrive limit each time the vault says "later", although the vault is up. The
batch waits instead, its messages held and their leases kept by the lease keeper, for up to
`max_wait` seconds in all; past that, or once the consumer stops, `Throttled` goes up and the batch
is postponed for at least the vault's retry-after (service/batch.py), the gate closed as long.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from etl_service.errors import Throttled
from etl_service.service.ports import Tokenizer

log = logging.getLogger(__name__)

MAX_THROTTLED_WAIT_SECONDS = 30.0
"""How long a batch the vault meters waits within its receive, in all, before it is postponed instead."""


class PacedTokenizer:
    """A Tokenizer that waits out the vault's `retry-after-ms` (Throttled) before trying the same call again."""

    def __init__(self, tokenizer: Tokenizer, max_wait: float = MAX_THROTTLED_WAIT_SECONDS) -> None:
        self._tokenizer = tokenizer
        self._max_wait = max_wait
        self.stopping = threading.Event()
        """Set at a stop: a waiting call stops waiting and raises its Throttled."""

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(ip -> token, device_id -> token), as the wrapped Tokenizer; Throttled only past the wait."""
        waited = 0.0
        while True:
            try:
                return self._tokenizer.tokenize(ips, device_ids)
            except Throttled as error:
                if waited + error.retry_after > self._max_wait or self.stopping.is_set():
                    raise
                log.info("vault quota reached: waiting its retry-after", extra={"retry_after_s": error.retry_after})
                if self.stopping.wait(error.retry_after):
                    raise
                waited += error.retry_after

    def ready(self) -> None:
        """The wrapped Tokenizer's readiness probe."""
        self._tokenizer.ready()
