"""When a message a failure left in the queue is received again: backoff from its SQS receive count.

The batch postpones through visibility with it (service/batch.py), and so does the SQS adapter for a
re-sent message waiting for OpenBao (adapters/sqs.py): both import it from here, so no adapter
depends on the service layer.
"""

from __future__ import annotations

MAX_RETRY_DELAY_SECONDS = 900
"""The longest postponement, whatever the receive count (15 minutes)."""


def retry_delay(receive_count: int, base_seconds: int = 2) -> int:
    """Exponential backoff from the SQS receive count: 2, 4, 8 ... capped at 15 minutes."""
    return int(min(base_seconds * 2 ** max(receive_count - 1, 0), MAX_RETRY_DELAY_SECONDS))
