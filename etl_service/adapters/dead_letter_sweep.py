"""The DLQ calls `dead-letters erase` adds to an operator's: hold for longer, delete one, count the rest.

A DeadLetterQueue whose listing can be held for as long as a sweep needs (a listing's lease is
60 s; opening thousands of bodies can take longer, and a message whose lease ran out could be
read by someone else meanwhile), that deletes one dead letter by its receipt handle, and that
asks SQS how many messages it did not see (visible ones it has not read, and those another reader
holds). The DLQ operators' IAM policy grants exactly these calls (deploy/aws).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from etl_service.adapters.dead_letter_queue import DeadLetter, DeadLetterQueue
from etl_service.adapters.sqs_common import SQS_ERRORS, approximate_counts, raise_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unseen:
    """Messages of the DLQ a sweep holds no lease on, by SQS's approximate counts."""

    visible: int
    """Visible but not read yet (arrived during the sweep, or beyond its listing's limit)."""
    held_elsewhere: int
    """In flight for another reader (an operator's list/show, a drain's take-back) or delayed."""


class DeadLetterSweep(DeadLetterQueue):
    """Operator access to the DLQ for removing dead letters."""

    def hold(self, letters: Sequence[DeadLetter], seconds: int) -> None:
        """Extend the lease of `letters` (listed by this object) to `seconds` from now."""
        for start in range(0, len(letters), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": d.receipt_handle, "VisibilityTimeout": seconds}
                for i, d in enumerate(letters[start : start + 10])
            ]
            try:
                self._client.change_message_visibility_batch(QueueUrl=self._dlq_url, Entries=entries)  # type: ignore[arg-type]
            except SQS_ERRORS as error:
                raise_for(error, "hold dead letters")

    def delete(self, dead: DeadLetter) -> None:
        """Delete one dead letter this object holds."""
        try:
            self._client.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=dead.receipt_handle)
        except SQS_ERRORS as error:
            raise_for(error, "delete from DLQ")
        self._held = [d for d in self._held if d.message_id != dead.message_id]

    def unseen(self) -> Unseen:
        """What this object holds no lease on; call it before release()."""
        counts = approximate_counts(self._client, self._dlq_url, "get DLQ attributes")
        return Unseen(
            visible=counts.visible,
            held_elsewhere=max(0, counts.in_flight - len(self._held)) + counts.delayed,
        )
