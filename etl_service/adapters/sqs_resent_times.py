"""Which received messages' claimed original sent times the ETL believes: tagged by `resend` or a take-back, and sane.

A message `dead-letters resend` re-sent carries its original SentTimestamp in
`tokenvault_sent_timestamp` with a Transit HMAC the DLQ operator computed (domain/resent_times.py);
one a take-back sent back, with the ETL's own HMAC of the SentTimestamp SQS kept on the DLQ copy
(take_back_times.py).
Believed only when the time lies within the DLQ's retention before the copy's own SentTimestamp
(sqs_common.claimed_sent_ms) and Transit verifies the tag over this message's event id and body;
otherwise ignored, with a warning naming the message id (never the body): the message loads
under SQS's own SentTimestamp. A claim over an event id longer than MAX_EVENT_ID_LENGTH is never
sent to Transit (review 22, R22-9): no tag vouches for an id the ETL refuses (`invalid_event_id`),
and a producer's 600 KB id made a `verify` item over OpenBao's 2 MiB request bound, so that every
receive holding it failed as "OpenBao unavailable" and its genuine claims waited. Without a
verifier (an ETL that discards dead-letter bodies has no Transit) no claimed time is believed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from etl_service.adapters.sqs_common import EVENT_ID_ATTRIBUTE, SENT_TIMESTAMP_ATTRIBUTE, claimed_sent_ms, timestamp_ms
from etl_service.domain.messages import MAX_EVENT_ID_LENGTH
from etl_service.domain.resent_times import (
    RESENT_FROM_ATTRIBUTE,
    SENT_TIME_TAG_ATTRIBUTE,
    ResentTimeVerifier,
    tag_input,
    well_formed,
)

log = logging.getLogger(__name__)


def string_attribute(message_attributes: Any, name: str) -> str | None:
    """A message attribute's StringValue, or None when absent or not a string (any sender sets them)."""
    value = message_attributes.get(name)
    text = value.get("StringValue") if isinstance(value, dict) else None
    return text if isinstance(text, str) else None


def claims_a_checkable_time(raw: Any) -> bool:
    """Whether a received message claims a re-sent time Transit would have to check (well formed, within bounds).

    What waits for OpenBao when it is down (SqsQueue.receive); any other claim is ignored without it.
    """
    attributes = raw.get("MessageAttributes") or {}
    if SENT_TIMESTAMP_ATTRIBUTE not in attributes:
        return False
    sqs_sent = timestamp_ms((raw.get("Attributes") or {}).get("SentTimestamp"))
    sent = claimed_sent_ms(string_attribute(attributes, SENT_TIMESTAMP_ATTRIBUTE), sqs_sent or 0)
    tag, resent_from = (string_attribute(attributes, n) for n in (SENT_TIME_TAG_ATTRIBUTE, RESENT_FROM_ATTRIBUTE))
    return sent is not None and well_formed(tag, resent_from) and _verifiable_event_id(attributes)


def _verifiable_event_id(attributes: Any) -> bool:
    """Whether the claim's event id (none counts as "") is one the ETL may accept, so worth a tag check."""
    return len(string_attribute(attributes, EVENT_ID_ATTRIBUTE) or "") <= MAX_EVENT_ID_LENGTH


def believed_sent_times(raws: Sequence[Any], verifier: ResentTimeVerifier | None) -> dict[str, int]:
    """Message id -> original sent time (ms), for each received message whose claimed time is believed.

    One Transit `verify` call for all the tagged claims of a receive (none when there are none).
    DependencyDown or Misconfigured from the verifier: the messages stay unprocessed (redelivered).
    """
    claims: list[tuple[str, int, bytes, str]] = []
    for raw in raws:
        attributes = raw.get("MessageAttributes") or {}
        if SENT_TIMESTAMP_ATTRIBUTE not in attributes:
            continue
        message_id = raw["MessageId"]
        sqs_sent = timestamp_ms((raw.get("Attributes") or {}).get("SentTimestamp"))
        sent = claimed_sent_ms(string_attribute(attributes, SENT_TIMESTAMP_ATTRIBUTE), sqs_sent or 0)
        tag, resent_from = (string_attribute(attributes, n) for n in (SENT_TIME_TAG_ATTRIBUTE, RESENT_FROM_ATTRIBUTE))
        if sent is None:
            _ignored(message_id, "not a time within the DLQ's retention before SQS's SentTimestamp")
        elif verifier is None or not well_formed(tag, resent_from):
            _ignored(message_id, "no tag of `dead-letters resend` or of a take-back vouches for it")
        elif not _verifiable_event_id(attributes):
            _ignored(
                message_id, f"its event id is longer than {MAX_EVENT_ID_LENGTH} characters, which no tag vouches for"
            )
        else:
            event_id = string_attribute(attributes, EVENT_ID_ATTRIBUTE) or ""
            data = tag_input(str(resent_from), event_id, sent, raw.get("Body", ""))
            claims.append((message_id, sent, data, str(tag)))
    if not claims:
        return {}
    valid = verifier.verify_tags([(data, tag) for _, _, data, tag in claims]) if verifier else []
    believed = {}
    for (message_id, sent, _, _), ok in zip(claims, valid, strict=True):
        if ok:
            believed[message_id] = sent
        else:
            _ignored(message_id, "its tag does not authenticate this time, event id and body")
    return believed


def _ignored(message_id: str, why: str) -> None:
    log.warning(
        "ignored the %s attribute: %s; SQS's SentTimestamp applies",
        SENT_TIMESTAMP_ATTRIBUTE,
        why,
        extra={"message_id": message_id},
    )
