"""The DLQ calls `dead-letters erase` adds to an operator's: hold for longer, delete one, count the rest.

A DeadLetterQueue whose listing can be held for as long as a sweep needs (a listing's lease is
60 s; opening thousands of bodies can take longer, and a message whose lease ran out could be
read by someone else meanwhile, or listed again by the sweep itself), renewed while the sweep
lists on (`keep_held`); that counts how many letters it holds (`holding`: SQS allows a standard
queue about 120,000 in flight), deletes one dead letter by its receipt handle, and asks SQS how
many messages it did not see (visible ones it has not read, and those another reader holds). The
DLQ operators' IAM policy grants exactly these calls (deploy/aws).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.adapters.dead_letter_queue import DeadLetterQueue
from etl_service.adapters.sqs_common import SQS_ERRORS, approximate_counts, raise_for

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

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

    def __init__(
        self, client: SQSClient, queue_url: str, dlq_url: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(client, queue_url, dlq_url, clock)
        self._holds: deque[tuple[float, int, list[DeadLetter]]] = deque()
        """Each hold() in the order they were set: when, for how long, which letters."""

    @property
    def holding(self) -> int:
        """How many dead letters this object holds in flight (listed, not deleted, not released)."""
        return len(self._held)

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
        self._holds.append((self._clock(), seconds, list(letters)))

    def keep_held(self, seconds: int) -> None:
        """Hold again, for `seconds` from now, the letters still held whose hold() is half spent.

        Cheap when none is due (one clock reading): a sweep calls it before each listing and
        each letter it checks, so what it holds never comes back visible while it lists on.
        """
        now = self._clock()
        while self._holds and now - self._holds[0][0] >= self._holds[0][1] / 2:
            _, _, letters = self._holds.popleft()
            still = {  # not deleted since; a letter listed again: under its newer receipt handle
                d.message_id: newer for d in letters if (newer := self._held.newest(d.message_id)) is not None
            }
            if still:
                self.hold(list(still.values()), seconds)

    def delete(self, dead: DeadLetter) -> None:
        """Delete one dead letter this object holds (in constant time: a sweep deletes up to 100,000)."""
        try:
            self._client.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=dead.receipt_handle)
        except SQS_ERRORS as error:
            raise_for(error, "delete from DLQ")
        self._held.forget(dead.message_id)

    def unseen(self) -> Unseen:
        """What this object holds no lease on; call it before release()."""
        counts = approximate_counts(self._client, self._dlq_url, "get DLQ attributes")
        return Unseen(
            visible=counts.visible,
            held_elsewhere=max(0, counts.in_flight - self.holding) + counts.delayed,
        )
