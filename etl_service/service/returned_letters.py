"""A dead letter of this ETL back on the source queue: sent back to the DLQ as it is, never sealed again.

AWS's DLQ redrive (the console's "Start DLQ redrive", `StartMessageMoveTask`) moves dead letters
back to the source queue as they are, attributes included. Read as an event, an envelope lacks
every field: it used to be dead-lettered again, sealed inside a second envelope, where
`dead-letters erase` (which opened one layer) missed the person (insider round 9, Break 8).

What counts as the ETL's own envelope is strict, because whatever passes goes to the DLQ
unsealed: the body must be byte for byte what `dead_letter_body` writes (no other key, no
duplicate key, no escape or blank that could carry text), either sealed under the ETL's own
dead-letter key with a Transit ciphertext (`vault:vN:` and base64 of at least a nonce and a tag)
or not kept with one of the ETL's own notes. Anything else is an event like any other (refused,
and sealed; `dead-letters erase` opens nested envelopes too).

Its attributes are the ones it came with when they are the ETL's: a known reason code, a detail
without an address (tokenvault_common.pii_text), an SQS-shaped source message id, a believable
sent time (the adapter checks it). What does not qualify is replaced: an unknown or missing
reason becomes RETURNED (a reasonless DLQ message would be taken back by the next drain, again
and again), a suspect detail a fixed text.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import replace

from etl_service.domain.messages import EVENT_ID_REUSED, QuarantineRecord, QueueMessage, quarantine_record
from etl_service.domain.validation import Rejection
from etl_service.service.outcomes import PROCESSING_FAILED
from etl_service.service.sealing import NOT_KEPT_NO_KEY, NOT_KEPT_TOO_LARGE, dead_letter_body, read_dead_letter_body
from tokenvault_common.pii_text import address_in, undefanged

RETURNED = "dead_letter_returned"
"""The reason of an envelope that came back without a reason of the ETL's."""
RETURNED_DETAIL = "a dead letter of this ETL came back to the source queue without its reason: returned as it was"
SUSPECT_DETAIL = "a dead letter of this ETL came back to the source queue: returned as it was (its detail dropped)"
KNOWN_REASONS = frozenset(
    {
        "body_too_large", "control_character", "duplicate_key", "empty_field", "field_too_long",
        "invalid_app_version", "invalid_event_id", "invalid_ip", "invalid_locale", "invalid_utf8",
        "missing_field", "not_an_object", "not_json", "null_field", "number_too_large", "too_deep",
        "unknown_device_type", "unparseable", "vault_rejected_value", "wrong_type",
        EVENT_ID_REUSED, PROCESSING_FAILED, RETURNED,
    }
)  # fmt: skip
"""Every reason the ETL dead-letters with (tests/unit/test_returned_letters.py keeps the list whole)."""
MAX_DETAIL = 1000
MIN_SEALED_BYTES = 12 + 16
"""A Transit AES-GCM ciphertext holds at least its nonce and its tag."""
_CIPHERTEXT = re.compile(r"vault:v[1-9][0-9]{0,9}:([A-Za-z0-9+/]+={0,2})")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")


class ReturnedLetter(Rejection):
    """A dead letter to send back to the DLQ unchanged, as its original (`origin`) was dead-lettered."""

    def __init__(self, reason: str, detail: str, origin: QueueMessage) -> None:
        super().__init__(reason, detail)
        self.origin = origin
        """The message as first dead-lettered: its SQS id and sent time (attributes of the DLQ copy)."""

    def quarantine_record(self) -> QuarantineRecord:
        """The original's quarantine record: the same key, so a row already written is not doubled."""
        origin = replace(self.origin, event_id=None) if self.reason == EVENT_ID_REUSED else self.origin
        return quarantine_record(origin, self.reason, self.detail)


def is_own_envelope(body: str, key_name: str | None) -> bool:
    """True when `body` is exactly a dead-letter envelope this ETL writes (see the module's docstring)."""
    if not body.startswith('{"format": '):  # the hot path: no event starts so
        return False
    envelope = read_dead_letter_body(body)
    if envelope is None:
        return False
    sealed, key, note = envelope["sealed_body"], envelope["key"], envelope["note"]
    if body != dead_letter_body(sealed, note, key):
        return False
    if sealed is None:
        return key is None and note in (NOT_KEPT_TOO_LARGE, NOT_KEPT_NO_KEY)
    return key is not None and key == key_name and note is None and _is_ciphertext(sealed)


def returned_letter(message: QueueMessage, key_name: str | None) -> ReturnedLetter | None:
    """The ReturnedLetter when `message` is one of this ETL's dead letters moved back as it was, else None."""
    if not is_own_envelope(message.body, key_name):
        return None
    attributes = dict(message.dead_letter_attributes)
    reason, detail = attributes.get("reason"), attributes.get("reason_detail", "")
    if reason not in KNOWN_REASONS:
        reason, detail = RETURNED, RETURNED_DETAIL
    elif not _fit_detail(detail):
        detail = SUSPECT_DETAIL
    origin = message
    source_id = attributes.get("source_message_id")
    if source_id is not None and _MESSAGE_ID.fullmatch(source_id) and address_in(source_id, broad=False) is None:
        origin = replace(origin, message_id=source_id)
    sent = attributes.get("source_sent_timestamp", "")  # believable: checked by the adapter
    if sent.isascii() and sent.isdigit() and len(sent) <= 15:
        origin = replace(origin, sent_timestamp_ms=int(sent))
    assert reason is not None
    return ReturnedLetter(reason, detail, origin)


def _fit_detail(detail: str) -> bool:
    return len(detail) <= MAX_DETAIL and detail.isprintable() and address_in(undefanged(detail), broad=False) is None


def _is_ciphertext(text: str) -> bool:
    match = _CIPHERTEXT.fullmatch(text)
    if match is None:
        return False
    try:
        return len(base64.b64decode(match.group(1), validate=True)) >= MIN_SEALED_BYTES
    except (binascii.Error, ValueError):
        return False
