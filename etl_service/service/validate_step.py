"""Step 1 of a batch (service/batch.py): each message judged on its own, as an event or a returned dead letter.

A message is accepted with its LoginEvent, or rejected with its Rejection. One of the ETL's own
dead letters moved back from the DLQ is recognised once Transit proves its ciphertext genuine (one
call for the batch's envelopes, none for a batch of events) and goes back as it is
(service/returned_letters.py). An event_id that carries the event's own ip or device id is never
kept: a valid event with one is refused as `invalid_event_id`, and a message refused for anything
else loses the id and keeps its reason (attack 19, finding 5); both are then keyed by their SQS
message id, in the quarantine row and the DLQ's attributes. The fields stored in clear (user_id,
locale, app_version) holding the event's own ip or device id are refused as `own_value_in_field`
(attack 23, F1): parse_login_event compares them and the id in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from etl_service.domain.messages import QueueMessage
from etl_service.domain.validation import LoginEvent, Reason, Rejection, own_value_in_body, parse_login_event
from etl_service.service.ports import BodySealer
from etl_service.service.returned_letters import claimed_ciphertext, returned_letter

Accepted = list[tuple[QueueMessage, LoginEvent]]
Rejected = list[tuple[QueueMessage, Rejection]]


def validate_messages(
    messages: Sequence[QueueMessage], sealer: BodySealer, device_types: frozenset[str], max_body_bytes: int
) -> tuple[Accepted, Rejected]:
    """(accepted, rejected) for `messages`; DependencyDown when Transit cannot prove claimed envelopes."""
    accepted: Accepted = []
    rejected: Rejected = []
    authentic = _authentic(messages, sealer)
    for message in messages:
        try:
            if returned := returned_letter(message, sealer.key_name, authentic):
                rejected.append((message, returned))  # one of our dead letters, moved back as it was
                continue
            if message.event_id_problem is not None:
                raise Rejection(Reason.INVALID_EVENT_ID, message.event_id_problem)
            # The id is compared with the event's own ip and device id with the fields stored in clear.
            accepted.append((message, parse_login_event(message.body, device_types, max_body_bytes, message.event_id)))
        except Rejection as rejection:
            if rejection.reason == Reason.INVALID_EVENT_ID:  # refused under its SQS id: no row or attribute keeps it
                rejected.append((replace(message, event_id=None), _unraised(rejection)))
            else:
                rejected.append((without_own_event_id(message, max_body_bytes), _unraised(rejection)))
    return accepted, rejected


def _unraised(rejection: Rejection) -> Rejection:
    """`rejection` without its traceback and the exception it replaced, as the batch keeps it.

    Their frames reach this function's frame, whose `rejected` list holds the rejection: kept
    with them, every batch holding a refused message was a reference cycle (its messages, events
    and rows with it) that only the cyclic garbage collector freed, in collections of 40-120 ms
    of the GIL every few thousand messages (~3.5 µs a message on the core path, measured).
    """
    rejection.__traceback__ = None
    rejection.__context__ = None
    return rejection


def without_own_event_id(message: QueueMessage, max_body_bytes: int) -> QueueMessage:
    """A refused message, without its event_id when that id carries the body's own ip or device id.

    Compared whatever the refusal (attack 19, finding 5): an event refused for its device_type or
    locale kept such an id in etl_quarantine.event_id and the DLQ's attribute. The reason stays.
    """
    if message.event_id is None:
        return message
    if own_value_in_body(message.event_id, message.body, max_body_bytes):
        return replace(message, event_id=None)
    return message


def _authentic(messages: Sequence[QueueMessage], sealer: BodySealer) -> frozenset[str]:
    """The ciphertexts of envelopes shaped as the ETL's own that Transit authenticates: one call, if any.

    DependencyDown (OpenBao down) postpones the batch: nothing is decided on a claim alone.
    """
    key_name = sealer.key_name
    claimed = {c for m in messages if (c := claimed_ciphertext(m.body, key_name)) is not None}
    return sealer.authentic(sorted(claimed)) if claimed else frozenset()
