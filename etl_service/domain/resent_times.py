"""The original sent time of a re-sent dead letter, vouched for by a Transit HMAC the DLQ operator computes.

`dead-letters resend` sends a dead letter's event back to the source queue with its original
SQS time in `tokenvault_sent_timestamp`, so it loads under its own `create_date`. Anyone who
may send to the queue can set that attribute too: the time is believed only with a tag, the
Transit HMAC (dead-letter key) of `tag_input` - the dead letter re-sent, the event id, the time
and the SHA-256 of the body - which only the operator's token may compute (`transit/hmac`) and
the ETL's may only check (`transit/verify`). A tag copied onto another body or another event id
does not verify; copied with the same body and event id it is a replay of that event, which
loads once (its event id). A take-back of a message SQS's redrive moved sends the same three
attributes for the SentTimestamp SQS kept on the DLQ copy, tagged with a key of the ETL's own
(the take-back key: `transit/hmac` for the ETL only, adapters/take_back_times.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

SENT_TIME_TAG_ATTRIBUTE = "tokenvault_sent_timestamp_tag"
"""The Transit HMAC of `tag_input`, as `vault:v<N>:<base64>`."""
RESENT_FROM_ATTRIBUTE = "tokenvault_resent_from"
"""The message id of the dead letter `resend` re-sent: part of what the tag binds, and named in logs."""
TAG_FORMAT = "tokenvault-resent-time/1"
_TAG = re.compile(r"vault:v[1-9][0-9]{0,8}:[A-Za-z0-9+/]{43}=")
"""A Transit HMAC-SHA256 tag (32 bytes, base64) of some key version; anything else is refused unasked."""
_LONGEST_ID = 200


@dataclass(frozen=True)
class ResentTime:
    """What a re-sent message carries to vouch for its original sent time (the three attributes)."""

    sent_ms: int
    """The original message's SentTimestamp (ms), the `tokenvault_sent_timestamp` attribute."""
    resent_from: str
    """The dead letter's message id (RESENT_FROM_ATTRIBUTE)."""
    tag: str
    """The Transit HMAC (SENT_TIME_TAG_ATTRIBUTE)."""


def tag_input(resent_from: str, event_id: str, sent_ms: int, body: str) -> bytes:
    """What the tag authenticates: format, dead letter, event id, time and the body's SHA-256, unambiguously joined."""
    digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
    return json.dumps([TAG_FORMAT, resent_from, event_id, sent_ms, digest], separators=(",", ":")).encode()


def well_formed(tag: str | None, resent_from: str | None) -> bool:
    """Whether a tag and dead-letter id are worth asking Transit about (a sender wrote both)."""
    return (
        tag is not None
        and _TAG.fullmatch(tag) is not None
        and resent_from is not None
        and 0 < len(resent_from) <= _LONGEST_ID
        and resent_from.isprintable()
    )


class ResentTimeVerifier(Protocol):
    """Checks tags against what they claim to authenticate (Transit `verify`)."""

    def verify_tags(self, claims: Sequence[tuple[bytes, str]]) -> list[bool]:
        """For each (tag_input, tag), whether the tag is the dead-letter key's or the take-back key's HMAC of it."""
        ...
