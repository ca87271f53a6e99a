"""The sent time a take-back vouches for: the SentTimestamp SQS itself kept on the DLQ copy (review 20, R20-13).

SQS's redrive moves a message to the DLQ with its message id and its original SentTimestamp; a
take-back sends a new copy, which SQS dates anew. So that the copy loads under its own
`create_date` (DESIGN §2: the UTC date of the event's SentTimestamp), the ETL tags the DLQ copy's
SentTimestamp - SQS's system attribute, never an attribute a sender set - with its take-back key
(resent_time_tags.TransitTimeTags), over the letter's message id, the event id and the body, as
`dead-letters resend` tags an operator's (domain/resent_times.py). The operators' `dead-letters
redrive` tags the same time the same way with their dead-letter key (resent_time_tags.tag_resent_times).
The ETL believes it on receipt like any re-sent time: the tag verified (under either key), the
time within the DLQ's retention before the copy's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from etl_service.domain.messages import MAX_EVENT_ID_LENGTH
from etl_service.domain.resent_times import ResentTime, tag_input

if TYPE_CHECKING:
    from etl_service.adapters.dead_letter import DeadLetter

TakeBackTagger = Callable[[Sequence[bytes]], list[str]]
"""A Transit HMAC of each tag input in one batch: the ETL's take-back key (TransitSealer.tag_take_back_times),
or the DLQ operator's dead-letter key (`dead-letters redrive`: resent_time_tags.tag_resent_times)."""


def take_back_times(letters: Sequence[DeadLetter], tagger: TakeBackTagger | None) -> dict[str, ResentTime]:
    """Message id -> the time and tag a take-back sends with it, for each letter that carries none of its own.

    A letter carrying a time and tag (a resend's or an earlier take-back's, moved by the redrive
    again) keeps them: its SentTimestamp in the DLQ is that re-send's, not the event's. One that
    SQS gives no SentTimestamp for, or every letter without a `tagger` (`dead-letters redrive`
    without the operator's token; an ETL that discards bodies has no Transit), gets none and loads
    under the date it is taken back, as does one whose event id is longer than any the ETL accepts
    (refused as `invalid_event_id` on its return: its tag input could exceed OpenBao's request
    bound, review 22, R22-9). One `tagger` call for all; its errors pass (nothing sent yet).
    """
    untagged = [
        d
        for d in letters
        if d.carried_time is None and d.sqs_sent_timestamp_ms > 0 and len(d.event_id) <= MAX_EVENT_ID_LENGTH
    ]
    if tagger is None or not untagged:
        return {}
    inputs = [tag_input(d.message_id, d.event_id, d.sqs_sent_timestamp_ms, d.raw_body) for d in untagged]
    tags = tagger(inputs)
    return {
        d.message_id: ResentTime(d.sqs_sent_timestamp_ms, d.message_id, tag)
        for d, tag in zip(untagged, tags, strict=True)
    }
