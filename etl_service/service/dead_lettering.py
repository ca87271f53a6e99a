"""What the batch sends to the DLQ: each rejected message's body, and a released message on its last receive.

`kept_bodies`: a rejected message's body goes sealed (or with a note saying why it was not kept); one
of the ETL's own envelopes goes as it is, never sealed again (service/returned_letters.py).

`dead_letter_released`: a message released (visibility 0: a stop, a misconfiguration) on its last
receive before the redrive limit would be moved to the DLQ in clear, without a reason, by SQS's next
receive (review 20, R20-10). It is sealed and dead-lettered instead as `released_on_last_receive`,
with no quarantine row - Postgres may be what stopped the ETL, or hang at a stop - under an event_id
that carries none of its own values (validate_step.without_own_event_id). Only when OpenBao or the
DLQ fails as well is it released, and the redrive takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from etl_service.domain.messages import QueueMessage
from etl_service.domain.validation import Reason, Rejection
from etl_service.errors import Misconfigured
from etl_service.service.outcomes import RELEASED_ON_LAST_RECEIVE, BatchOutcome
from etl_service.service.ports import BodySealer, Queue
from etl_service.service.returned_letters import ReturnedLetter, is_own_envelope
from etl_service.service.sealing import NOT_KEPT_TOO_LARGE, dead_letter_body
from etl_service.service.validate_step import Rejected, without_own_event_id

log = logging.getLogger(__name__)


def kept_bodies(rejected: Rejected, sealer: BodySealer, minted: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The DLQ body of each rejected message: sealed, or a note saying why it was not kept.

    One of the ETL's own envelopes goes as it is, whatever its rejection: never sealed again.
    `minted`: the tokens the vault returned for messages of the batch, by message id; a rejected
    message among them was tokenized and is dead-lettered instead of loaded (its load failed on its
    last receive, the vault refused its other value, its event_id was taken in the same load), so
    the vault holds its values under tokens no row took: its envelope records them, sealed
    (sealing.py, `minted_tokens`), for an erasure of its person to reach (attack 35, N9).
    """
    if not rejected:
        return []
    bodies = [dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)] * len(rejected)
    keep = []
    for index, (message, rejection) in enumerate(rejected):
        # The second test is for a returned letter whose reading failed past is_own_envelope (a bug in
        # returned_letter), quarantined as processing_failed on its last receive: a not-kept envelope
        # still goes as it is. It cannot fail as returned_letter did: is_own_envelope reads only the
        # body and raises on nothing (read_dead_letter_body, _is_ciphertext). Nothing proves a sealed
        # one here (no Transit call on this path): it is sealed inside a second envelope, which
        # `dead-letters` opens, rather than passed on unproven.
        if isinstance(rejection, ReturnedLetter) or is_own_envelope(message.body, sealer.key_name):
            bodies[index] = message.body
        elif rejection.reason != Reason.BODY_TOO_LARGE:
            keep.append(index)
    tokens = [tuple(minted.get(rejected[i][0].message_id, ())) if minted else () for i in keep]
    sealed = sealer.seal([rejected[i][0].body for i in keep], minted=tokens if any(tokens) else None) if keep else []
    for index, text in zip(keep, sealed, strict=True):
        bodies[index] = text
    return bodies


def dead_letter_released(
    queue: Queue,
    sealer: BodySealer,
    messages: Sequence[QueueMessage],
    why: str,
    max_body_bytes: int,
    outcome: BatchOutcome,
    minted: Mapping[str, Sequence[str]] | None = None,
) -> list[QueueMessage]:
    """Seal, dead-letter and delete `messages` (each on its last receive, being released for `why`).

    `minted`: tokens the vault returned for them before the release (a misconfiguration met at the
    load), recorded in their envelopes (`kept_bodies`).

    Returns those it could not dead-letter (OpenBao or the DLQ down or refusing), to be released;
    counts the others in `outcome` under their reason. A body over `max_body_bytes` is not kept.
    """
    log.error(
        "last receive of messages being released: dead-lettering them sealed",
        extra={"message_ids": [m.message_id for m in messages]},
    )
    rejection = Rejection(RELEASED_ON_LAST_RECEIVE, f"released on its last receive: {why}")
    too_large = Rejection(Reason.BODY_TOO_LARGE, rejection.detail)  # only tells kept_bodies not to seal it
    rejected: Rejected = [
        (without_own_event_id(m, max_body_bytes), too_large if len(m.body.encode()) > max_body_bytes else rejection)
        for m in messages
    ]
    try:
        bodies = kept_bodies(rejected, sealer, minted)
    except Exception as error:  # OpenBao down or refusing: released, and the redrive takes them
        log.error("sealing messages released on their last receive failed: %s", type(error).__name__)
        return list(messages)
    sent, failed = [], []
    for original, (message, _), body in zip(messages, rejected, bodies, strict=True):
        try:
            queue.dead_letter(message, rejection.reason, rejection.detail, body)
            sent.append(original)
        except Exception as error:  # the DLQ down or refusing: released, and the redrive takes it
            log.error(
                "dead-lettering a released message failed: %s",
                type(error).__name__,
                extra={"message_id": message.message_id},
            )
            failed.append(original)
    if sent:
        try:
            outcome.delete_failures += len(queue.delete(sent))
        except Misconfigured as error:  # SQS refuses the delete (C49-7): left to the redrive, as the ETL stops
            log.error("deleting messages dead-lettered at their release failed: %s", error)
            outcome.delete_failures += len(sent)
        outcome.quarantined += len(sent)
        outcome.reasons[RELEASED_ON_LAST_RECEIVE] += len(sent)
    return failed
