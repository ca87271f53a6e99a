"""What the DLQ keeps of a refused message's body: sealed under a key the vault controls, or nothing.

The DLQ is outside the vault: a body there in clear would keep its ip and device id for the
queue's retention (14 days). Each DLQ message body is a small JSON envelope:

    {"format": "tokenvault-dead-letter/1", "sealed_body": "vault:v1:...",
     "key": "tokenvault-dead-letters", "note": null}

`sealed_body` is the original body encrypted by a BodySealer (OpenBao Transit: the ETL may
only encrypt, and rewrap to prove a returned letter genuine; an operator identity may decrypt,
and the audit device records each decrypt), or null with a `note` saying why it was not kept
(over the size limit, or the operator chose ETL_DLQ_BODIES=discard). Reasons and metadata travel
as message attributes, readable without any key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

DEAD_LETTER_FORMAT = "tokenvault-dead-letter/1"
NOT_KEPT_TOO_LARGE = "body not kept: over the size limit"
NOT_KEPT_NO_KEY = "body not kept: the ETL runs with ETL_DLQ_BODIES=discard"


def dead_letter_body(sealed: str | None, note: str | None, key: str | None) -> str:
    """The DLQ body envelope."""
    return json.dumps({"format": DEAD_LETTER_FORMAT, "sealed_body": sealed, "key": key, "note": note})


def read_dead_letter_body(text: str) -> dict[str, str | None] | None:
    """The envelope's fields, or None when `text` is not one (a message SQS's redrive moved as it was).

    Never raises, whatever `text` holds; a field that is not a string reads as None.
    """
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError):  # anyone who may send to the DLQ writes its bodies
        return None
    if not isinstance(envelope, dict) or envelope.get("format") != DEAD_LETTER_FORMAT:
        return None
    return {k: v if isinstance(v := envelope.get(k), str) else None for k in ("sealed_body", "key", "note")}


class DiscardBodies:
    """A BodySealer that keeps no body at all (ETL_DLQ_BODIES=discard, an operator's explicit choice)."""

    def __init__(self, key_name: str | None = None) -> None:
        self.key_name = key_name
        """The ETL's dead-letter key (ETL_DLQ_SEAL_KEY), though nothing is sealed with it here. A letter
        sealed under it before the switch to discard, moved back to the source queue, cannot be proven
        the ETL's own without OpenBao (`authentic`): it is refused like any other message, its body not
        kept - a producer could write any base64 in its place (service/returned_letters.py)."""

    def seal(self, bodies: Sequence[str]) -> list[str]:
        """An envelope without the body, for each."""
        return [dead_letter_body(None, NOT_KEPT_NO_KEY, None)] * len(bodies)

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        """None: in discard mode the ETL has no OpenBao access to prove a ciphertext genuine."""
        return frozenset()
