"""Step 2a of a batch (service/batch.py): events loaded already, or whose event_id the batch holds, set aside.

The store is asked which accepted events user_logins holds (LoginStore.loaded_before: one indexed
read of the batch's event ids, and only if any is there the comparison of the columns without
tokens). A replay - an SQS redelivery, a crash between the commit and the delete, a producer's
retry, a dead letter taken back - is counted `already_loaded` and deleted; a different event under
a loaded event_id is quarantined as `event_id_reused`. Neither reaches the vault (attack 34, E1):
tokenized, a replay after the person's erasure stored the erased ip and device id again under new
tokens no row held (the erasure undone where no one could find it), and a refused event left its
person's values in the vault for good.

Then the batch's own events are grouped by event_id (`held_in_batch`, attack 38, M4): neither of two
events under one id in the same batch is loaded when the batch asks, so both were tokenized, and
the load - whose comparison takes no token (migration 0021: it would be an oracle of stored values)
- counted a second differing only in its ip or device id as a replay: `already_loaded`, deleted, its
values in the vault under tokens no row held, out of every erasure step's reach. The batch holds
both events in memory, values included, so it compares them itself, no read and no oracle: an event
whose event_id an earlier event of the batch holds with other content (any column `to_row` writes,
ip and device id included) is refused as `event_id_reused` before the vault is called; an exact
duplicate stays, mints nothing more (the vault call takes distinct values) and the load counts it
`already_loaded`, as before.

What is left is the race with a concurrent load of the same event (another consumer, or a redelivery
while this batch runs): both find it not loaded and both tokenize; the load's ON CONFLICT and
`user_logins_reused_event_ids` still settle it (nothing loaded twice), and the second's tokens are
the first's - unless the person's erasure falls between the two tokenize calls, a window of one
batch, or the two differ in their ip or device id alone, which that comparison cannot see
(docs/threat-model.md, "What an erasure reaches").
"""

from __future__ import annotations

import logging

from etl_service.domain.messages import (
    EVENT_ID_REUSED,
    QueueMessage,
    event_content,
    event_id_held_in_batch_detail,
    event_key,
)
from etl_service.domain.validation import LoginEvent, Rejection
from etl_service.service.ports import LoginStore
from etl_service.service.settle_step import reused_messages
from etl_service.service.validate_step import Accepted, Rejected

log = logging.getLogger(__name__)


def set_aside_loaded(store: LoginStore, accepted: Accepted) -> tuple[Accepted, list[QueueMessage], Rejected]:
    """(the events to tokenize, the replays, those reusing a loaded event_id or one the batch holds, refused)."""
    if not accepted:
        return accepted, [], []
    found = store.loaded_before([event_key(m, e) for m, e in accepted])
    if not found.replays and not found.reused:
        left, held = held_in_batch(accepted)  # nearly every batch: no event loaded before
        return left, [], held
    reused = reused_messages([m for m, _ in accepted], found.reused)
    aside = found.replays | {r.message_id for r in found.reused}
    replays = [m for m, _ in accepted if m.message_id in found.replays]
    left, held = held_in_batch([(m, e) for m, e in accepted if m.message_id not in aside])
    return left, replays, [*reused, *held]


def held_in_batch(accepted: Accepted) -> tuple[Accepted, Rejected]:
    """(`accepted` but those whose event_id an earlier one holds with other content, those refused).

    One set of the batch's event ids (a few µs a batch); the events are compared only when two share one.
    """
    if len({m.event_id or m.message_id for m, _ in accepted}) == len(accepted):
        return accepted, []
    first: dict[str, tuple[QueueMessage, LoginEvent]] = {}
    kept: Accepted = []
    refused: Rejected = []
    for message, event in accepted:
        holder, held = first.setdefault(message.event_id or message.message_id, (message, event))
        if holder is message or event_content(holder, held) == event_content(message, event):
            kept.append((message, event))  # the first under its id, or an exact duplicate of it
            continue
        log.warning(
            "event_id held by an earlier event of the batch with other content: quarantined before tokenizing",
            extra={"message_id": message.message_id, "held_by_message_id": holder.message_id},
        )
        refused.append((message, Rejection(EVENT_ID_REUSED, event_id_held_in_batch_detail(holder.message_id))))
    return kept, refused
