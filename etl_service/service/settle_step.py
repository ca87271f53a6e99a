"""Steps 4 and 5 of a batch (service/batch.py), once its rows and quarantine records are committed.

The messages the load refused as `event_id_reused` (another event holds their event_id) join the
rejected ones (`reused_messages`); each rejected message goes to the DLQ with its kept body and
reason, one of the ETL's own dead letters moved back with the attributes of its first
dead-lettering; only then is the batch deleted from the source queue, but for any the DLQ refused:
they stay, and their redelivery dead-letters them again (`dead_letter_and_delete`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from etl_service.domain.messages import EVENT_ID_REUSED, QueueMessage, event_id_reused_detail
from etl_service.domain.validation import Rejection
from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.outcomes import BatchOutcome
from etl_service.service.ports import Queue, ReusedEventId
from etl_service.service.returned_letters import ReturnedLetter
from etl_service.service.validate_step import Rejected

log = logging.getLogger(__name__)


def reused_messages(messages: Sequence[QueueMessage], reused: Sequence[ReusedEventId]) -> Rejected:
    """The messages whose event_id another event holds, each with its rejection; logged by message ids only."""
    by_id = {m.message_id: m for m in messages}
    found: Rejected = []
    for item in reused:
        log.warning(
            "event_id already loaded for a different event: quarantined, not a duplicate",
            extra={"message_id": item.message_id, "loaded_message_id": item.loaded_message_id},
        )
        rejection = Rejection(EVENT_ID_REUSED, event_id_reused_detail(item.loaded_message_id))
        found.append((by_id[item.message_id], rejection))
    return found


def dead_letter_and_delete(
    queue: Queue, messages: Sequence[QueueMessage], rejected: Rejected, bodies: list[str], outcome: BatchOutcome
) -> None:
    """Steps 4 and 5: each rejected message to the DLQ with its body, then delete the batch from the source queue.

    One the DLQ refused stays in the source queue (its redelivery dead-letters it again); counted in `outcome`.
    """
    undeletable: set[str] = set()
    for (message, rejection), body in zip(rejected, bodies, strict=True):
        returned = rejection.origin if isinstance(rejection, ReturnedLetter) else None
        try:  # a returned dead letter goes with the attributes of its first dead-lettering
            queue.dead_letter(returned or message, rejection.reason, rejection.detail, body)
        except DependencyDown as error:
            # Keep it in the source queue: its redelivery dead-letters it again.
            log.warning("dead-lettering failed: %s", error, extra={"message_id": message.message_id})
            undeletable.add(message.message_id)
            continue
        if returned is not None:  # counted once, when first dead-lettered
            outcome.returned_to_dlq += 1
            log.info(  # its source id is the sender's text: not logged (returned_letters.py)
                "a dead letter came back to the source queue: returned to the DLQ unchanged",
                extra={"message_id": message.message_id, "reason": rejection.reason},
            )
            continue
        outcome.quarantined += 1
        outcome.reasons[rejection.reason] += 1
        log.info("quarantined", extra={"message_id": message.message_id, "reason": rejection.reason})
    deletable = [m for m in messages if m.message_id not in undeletable] if undeletable else messages
    try:
        failed = queue.delete(deletable)
    except Misconfigured as refused:  # SQS refuses the delete (C49-7): the letters are sent, not to be resent
        outcome.delete_refused = refused
        outcome.delete_failures = len(deletable)
        raise
    if failed:
        log.warning("delete failed; redelivery will skip them as duplicates", extra={"messages": len(failed)})
    outcome.delete_failures = len(failed)
    outcome.retried += len(undeletable)
    outcome.errored |= undeletable
