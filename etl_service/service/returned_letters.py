"""A dead letter of this ETL back on the source queue: sent back to the DLQ as it is, never sealed again.

AWS's DLQ redrive (the console's "Start DLQ redrive", `StartMessageMoveTask`) moves dead letters
back to the source queue as they are, attributes included. Read as an event, an envelope lacks
every field: it used to be dead-lettered again, sealed inside a second envelope, where
`dead-letters erase` (which opened one layer) missed the person (insider round 9, Break 8).

What counts as the ETL's own envelope is strict, because whatever passes goes to the DLQ
unsealed: the body must be byte for byte what `dead_letter_body` writes (no other key, no
duplicate key, no escape or blank that could carry text), either sealed under the ETL's own
dead-letter key or not kept with one of the ETL's own notes. Anything else is an event like any
other (refused, and sealed; `dead-letters erase` opens nested envelopes too).

A sealed one must also be proven: its shape (`vault:vN:` and base64 of at least a nonce and a
tag) is only a claim (`claimed_ciphertext`), since any base64 - a third party's PII in clear
under one line of it - has that shape (attack 10, finding 3). The batch asks the BodySealer
which of its claims Transit authenticates under the dead-letter key (`authentic`: one `rewrap`
call for the batch's returned letters, which fails on a forged ciphertext and reveals no
plaintext; ordinary events never reach it), and only those pass (`is_own_envelope`). One that
fails - forged, or sealed under a key version since retired - is an event like any other. A
sealer that cannot ask Transit (ETL_DLQ_BODIES=discard: no OpenBao access) proves none: a sealed
letter moved back to such an ETL is refused like any other message and its body is not kept.

Anyone who may send to the source queue can write such an envelope (the key name is public),
with attributes of its choosing: nothing it chose as text goes on (review B, finding 2). The
reason is kept when it is one the ETL dead-letters with (a closed set), else RETURNED (a
reasonless DLQ message would be taken back by the next drain, again and again). The detail is
always RETURNED_DETAIL: the original's detail is in its quarantine row, under the same key. The
source message id is kept only in the shape SQS issues (a lowercase UUID), since with the event
id it keys the original's quarantine row (not doubled) and `resend` re-sends under it; a
UUID-shaped device id passes that check, but no further than an `event_id` attribute, which any
producer sets on any message: it is never logged, and a new quarantine row names the copy SQS
delivered (ReturnedLetter.quarantine_record). The sent time is the adapter's, which believes it
only within the DLQ's retention.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from dataclasses import dataclass, replace

from etl_service.domain.messages import EVENT_ID_REUSED, QuarantineRecord, QueueMessage, quarantine_record
from etl_service.domain.validation import REASONS, Rejection
from etl_service.service.outcomes import UNLOADED_REASONS
from etl_service.service.sealing import (
    MINTED_FIELD,
    NOT_KEPT_NO_KEY,
    NOT_KEPT_TOO_LARGE,
    dead_letter_body,
    read_dead_letter_body,
)

RETURNED = "dead_letter_returned"
"""The reason of an envelope that came back without a reason of the ETL's."""
RETURNED_DETAIL = (
    "a dead letter of this ETL came back to the source queue: returned as it was (its first detail is in its"
    " quarantine row)"
)
"""The detail of every returned letter: whatever detail it carries is the sender's text."""
KNOWN_REASONS = REASONS | {EVENT_ID_REUSED, *UNLOADED_REASONS, RETURNED}
"""Every reason the ETL dead-letters with: validation's, and those the batch and this module give."""
MIN_SEALED_BYTES = 12 + 16
"""A Transit AES-GCM ciphertext holds at least its nonce and its tag."""
_CIPHERTEXT = re.compile(r"vault:v[1-9][0-9]{0,9}:([A-Za-z0-9+/]+={0,2})")
_SQS_MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""What SQS issues as a MessageId (and ministack: str(uuid.uuid4()))."""


class ReturnedLetter(Rejection):
    """A dead letter to send back to the DLQ unchanged, as its original (`origin`) was dead-lettered."""

    def __init__(self, reason: str, detail: str, origin: QueueMessage, copy_id: str) -> None:
        super().__init__(reason, detail)
        self.origin = origin
        """The message as first dead-lettered: its SQS id and sent time (attributes of the DLQ copy)."""
        self.copy_id = copy_id
        """The SQS id of the copy moved back, as SQS issued it."""

    def quarantine_record(self) -> QuarantineRecord:
        """The original's quarantine record: the same key, so a row already written is not doubled.

        A row it adds (no original's row under the key: a forged envelope) names the copy's SQS id.
        """
        origin = replace(self.origin, event_id=None) if self.reason == EVENT_ID_REUSED else self.origin
        return replace(quarantine_record(origin, self.reason, self.detail), sqs_message_id=self.copy_id)


ENVELOPE_START = '{"format": '
"""How every envelope `dead_letter_body` writes begins (its dict dumped, `format` first); no event starts so."""


@dataclass(frozen=True)
class WrittenEnvelope:
    """A body shaped as an ETL envelope (`written_envelope`): whose it is, its methods tell."""

    body: str
    """The body as it is: an envelope of the ETL's is byte for byte what `dead_letter_body` writes."""
    sealed_body: str | None
    key: str | None
    note: str | None
    minted_tokens: str | None = None
    """The sealed tokens the vault minted for the message (sealing.py), None in an envelope without them."""

    def claimed_ciphertext(self, key_name: str | None) -> str | None:
        """The ciphertext when the body has exactly the shape of an envelope this ETL sealed under `key_name`.

        Only a claim: `is_own` takes the envelope for the ETL's own once Transit proved it. An envelope
        recording minted tokens has the same shape with that field, its value shaped as a ciphertext too
        (not proven: `dead-letters` opens it with the dead-letter key, and a forged one does not open).
        """
        sealed, key, minted = self.sealed_body, self.key, self.minted_tokens
        if sealed is None or key is None or key != key_name or self.note is not None or not _is_ciphertext(sealed):
            return None
        if minted is not None and not _is_ciphertext(minted):
            return None
        return sealed if self.body == dead_letter_body(sealed, None, key, minted) else None

    def is_own(self, key_name: str | None, authentic: Collection[str] = frozenset()) -> bool:
        """True when the body is exactly a dead-letter envelope this ETL writes (see the module's docstring).

        A sealed one only when its ciphertext is in `authentic` (what Transit authenticated:
        BodySealer.authentic).
        """
        if (sealed := self.claimed_ciphertext(key_name)) is not None:
            return sealed in authentic
        if self.sealed_body is not None or self.key is not None:
            return False
        note = self.note
        return note in (NOT_KEPT_TOO_LARGE, NOT_KEPT_NO_KEY) and self.body == dead_letter_body(None, note, None)


def written_envelope(body: str) -> WrittenEnvelope | None:
    """`body` read as an envelope when it is shaped as one the ETL writes (begins so, parses so), else None.

    What tells a source-queue body shaped as an ETL envelope, and parses it: a returned letter
    here. A DLQ listing parses each body once itself (DeadLetter); own_dead_letters.read_envelope
    gives this answer from that reading, for the take-back's own letters and `list`'s CLEAR.
    Never raises, whatever `body` holds; cheap for every other body (no event begins so).
    """
    if not body.startswith(ENVELOPE_START):  # the hot path: no event starts so
        return None
    fields = read_dead_letter_body(body)
    if fields is None:
        return None
    return WrittenEnvelope(body, fields["sealed_body"], fields["key"], fields["note"], fields.get(MINTED_FIELD))


def claimed_ciphertext(body: str, key_name: str | None) -> str | None:
    """The ciphertext of `body` when it has exactly the shape of an envelope this ETL sealed, else None.

    Only a claim: `is_own_envelope` takes the envelope for the ETL's own once Transit proved it.
    """
    envelope = written_envelope(body)
    return envelope.claimed_ciphertext(key_name) if envelope is not None else None


def is_own_envelope(body: str, key_name: str | None, authentic: Collection[str] = frozenset()) -> bool:
    """True when `body` is exactly a dead-letter envelope this ETL writes (see the module's docstring).

    A sealed one only when its ciphertext is in `authentic` (what Transit authenticated: BodySealer.authentic).
    """
    envelope = written_envelope(body)
    return envelope is not None and envelope.is_own(key_name, authentic)


def returned_letter(
    message: QueueMessage, key_name: str | None, authentic: Collection[str] = frozenset()
) -> ReturnedLetter | None:
    """The ReturnedLetter when `message` is one of this ETL's dead letters moved back as it was, else None.

    `authentic`: the ciphertexts Transit authenticated under the dead-letter key (see is_own_envelope).
    """
    if not is_own_envelope(message.body, key_name, authentic):
        return None
    attributes = dict(message.dead_letter_attributes)
    reason = attributes.get("reason", RETURNED)
    if reason not in KNOWN_REASONS:
        reason = RETURNED
    origin = message
    source_id = attributes.get("source_message_id")
    if source_id is not None and _SQS_MESSAGE_ID.fullmatch(source_id):
        origin = replace(origin, message_id=source_id)
    sent = attributes.get("source_sent_timestamp")  # digits, believable: sqs._dead_letter_attributes checked it
    if sent is not None:
        origin = replace(origin, sent_timestamp_ms=int(sent))
    return ReturnedLetter(reason, RETURNED_DETAIL, origin, message.message_id)


def _is_ciphertext(text: str) -> bool:
    match = _CIPHERTEXT.fullmatch(text)
    if match is None:
        return False
    try:
        return len(base64.b64decode(match.group(1), validate=True)) >= MIN_SEALED_BYTES
    except (binascii.Error, ValueError):
        return False
