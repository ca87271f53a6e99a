"""Step 2a of a batch (service/batch.py): events loaded already are set aside before they are tokenized.

The store is asked which accepted events user_logins holds (LoginStore.loaded_before: one indexed
read of the batch's event ids, and only if any is there the comparison of the columns without
tokens). A replay - an SQS redelivery, a crash between the commit and the delete, a producer's
retry, a dead letter taken back - is counted `already_loaded` and deleted; a different event under
a loaded event_id is quarantined as `event_id_reused`. Neither reaches the vault (attack 34, E1):
tokenized, a replay after the person's erasure stored the erased ip and device id again under new
tokens no row held (the erasure undone where no one could find it), and a refused event left its
person's values in the vault for good.

What is left is the race with a concurrent load of the same event (another consumer, or a redelivery
while this batch runs): both find it not loaded and both tokenize; the load's ON CONFLICT and
`user_logins_reused_event_ids` still settle it (nothing loaded twice), and the second's tokens are
the first's - unless the person's erasure falls between the two tokenize calls, a window of one
batch (docs/threat-model.md, "What an erasure reaches").
"""

from __future__ import annotations

from etl_service.domain.messages import QueueMessage, event_key
from etl_service.service.ports import LoginStore
from etl_service.service.settle_step import reused_messages
from etl_service.service.validate_step import Accepted, Rejected


def set_aside_loaded(store: LoginStore, accepted: Accepted) -> tuple[Accepted, list[QueueMessage], Rejected]:
    """(the events to tokenize, the replays, those reusing a loaded event_id with their rejection)."""
    if not accepted:
        return accepted, [], []
    found = store.loaded_before([event_key(m, e) for m, e in accepted])
    if not found.replays and not found.reused:
        return accepted, [], []
    reused = reused_messages([m for m, _ in accepted], found.reused)
    aside = found.replays | {r.message_id for r in found.reused}
    replays = [m for m, _ in accepted if m.message_id in found.replays]
    return [(m, e) for m, e in accepted if m.message_id not in aside], replays, reused
