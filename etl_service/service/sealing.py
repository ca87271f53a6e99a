"""What the DLQ keeps of a refused message's body: sealed under a key the vault controls, or nothing.

The DLQ is outside the vault: a body there in clear would keep its ip and device id for the
queue's retention (14 days). Each DLQ message body is a small JSON envelope:

    {"format": "tokenvault-dead-letter/1", "sealed_body": "vault:v1:...",
     "key": "tokenvault-dead-letters", "note": null}

and, for a message the vault tokenized before it was dead-lettered (its load failed: attack 35,
N9), also `"minted_tokens": "vault:v1:..."`: the tokens the ETL's Tokenize call returned for its
ip and device id, a JSON list sealed under the same key. No row of user_logins took them (the
event never loaded), so a person's erasure reaches them through this field only: `dead-letters
erase` and `show` open it and name the tokens for the privacy officer to erase. An envelope
without the field (every one sealed before it, and every one without tokens) is written and
read exactly as before.

`sealed_body` is the original body encrypted by a BodySealer (OpenBao Transit: the ETL may
only encrypt, and rewrap to prove a returned letter genuine; an operator identity may decrypt,
and the audit device records each decrypt), or null with a `note` saying why it was not kept
(over the size limit, or the operator chose ETL_DLQ_BODIES=discard). Reasons and metadata travel
as message attributes, readable without any key.

An envelope must fit one SQS message with its attributes (MAX_ENVELOPE_BYTES): a body too large
to seal within it is not kept (largest_sealable_body_bytes; config.py refuses an ETL_MAX_BODY_BYTES
above it). A claim is proven up to what any SQS message can carry (`longest_claim_chars`), not
only up to what this ETL writes: an earlier ETL, or one with a larger ETL_MAX_BODY_BYTES, wrote
longer genuine ones (review 15, finding 6).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

DEAD_LETTER_FORMAT = "tokenvault-dead-letter/1"
NOT_KEPT_TOO_LARGE = "body not kept: over the size limit"
NOT_KEPT_NO_KEY = "body not kept: the ETL runs with ETL_DLQ_BODIES=discard"

SQS_MAX_MESSAGE_BYTES = 262_144
"""SQS refuses a message whose body and attributes together are larger (256 KiB)."""
DEAD_LETTER_ATTRIBUTES_RESERVE_BYTES = 6 * 1024
"""Room left beside the envelope for a dead letter's attributes, which SQS counts with the body (names,
types, values): a reason, a detail of at most 1,000 characters, the source message id and sent time
and an event id of at most 128 characters (adapters/sqs.py `dead_letter`): 4,678 bytes at most as SQS
counts them, in UTF-8 (tests/unit/test_dead_letter_attributes_reserve.py builds the largest and checks).
What the attributes leave of it also holds an envelope's `minted_tokens` field (MINTED_FIELD_MAX_BYTES),
which an envelope may carry beyond MAX_ENVELOPE_BYTES: the same test checks the three together."""
MAX_ENVELOPE_BYTES = SQS_MAX_MESSAGE_BYTES - DEAD_LETTER_ATTRIBUTES_RESERVE_BYTES
"""The longest DLQ body the ETL writes: a longer envelope would not fit one SQS message with its attributes."""
TRANSIT_SEALED_EXTRA_BYTES = 12 + 16
"""What Transit's AES-GCM adds to a plaintext: its nonce and its tag."""
_LONGEST_CIPHERTEXT_PREFIX = len("vault:v") + 10 + len(":")
"""`vault:v<version>:`, the version of at most 10 digits (returned_letters.py reads no longer one)."""
MINTED_FIELD = "minted_tokens"
"""The envelope's field holding the sealed tokens the vault minted for the message (module docstring)."""
MAX_MINTED_TOKENS = 2
"""Tokens one message's Tokenize call returns at most: its ip's and its device id's."""
MINTED_TOKEN_CHARS = 32
"""The longest token the ETL records (`ip_`/`dev_` and 22 characters: 26); a longer text is not recorded."""
MINTED_FIELD_MAX_BYTES = 256
"""The most `, "minted_tokens": "vault:v<version>:<base64>"` adds to an envelope: a JSON list of at most
MAX_MINTED_TOKENS tokens of at most MINTED_TOKEN_CHARS (72 bytes), sealed (nonce and tag: 100), base64
(136), behind the longest prefix (18) and the field's name and quotes (21): 175 bytes; 256 rounds it up."""


def longest_claim_chars(key_name: str | None) -> int:
    """The longest `sealed_body` an envelope under `key_name` can hold in any SQS message (SQS_MAX_MESSAGE_BYTES).

    A longer claim came in no SQS message: it is not proven, nor sent to Transit to prove (attack
    14, finding 2). The bound is what SQS carries, not what this ETL writes (MAX_ENVELOPE_BYTES):
    a genuine letter an earlier ETL sealed with a larger ETL_MAX_BODY_BYTES is longer, and an
    unproven letter is taken back to the source queue, refused there as too large, its body lost
    (review 15, finding 6). Transit request bodies stay bounded by the sealer's 4 MiB chunks.
    """
    return SQS_MAX_MESSAGE_BYTES - len(dead_letter_body("", None, key_name))


def longest_written_claim_chars(key_name: str | None) -> int:
    """The longest `sealed_body` an envelope this ETL writes under `key_name` holds (MAX_ENVELOPE_BYTES)."""
    return MAX_ENVELOPE_BYTES - len(dead_letter_body("", None, key_name))


def largest_sealable_body_bytes(key_name: str | None) -> int:
    """The largest body (UTF-8 bytes) whose sealed envelope under `key_name` fits MAX_ENVELOPE_BYTES.

    Transit's ciphertext is `vault:v<version>:` and base64 of the body, its nonce and its tag.
    """
    base64_chars = longest_written_claim_chars(key_name) - _LONGEST_CIPHERTEXT_PREFIX
    return base64_chars // 4 * 3 - TRANSIT_SEALED_EXTRA_BYTES


def dead_letter_body(sealed: str | None, note: str | None, key: str | None, minted: str | None = None) -> str:
    """The DLQ body envelope; with `minted` (the sealed tokens minted for the message) its `minted_tokens` field."""
    envelope = {"format": DEAD_LETTER_FORMAT, "sealed_body": sealed, "key": key, "note": note}
    if minted is not None:  # absent otherwise: an envelope without tokens is written as before, byte for byte
        envelope[MINTED_FIELD] = minted
    return json.dumps(envelope)


def minted_plaintext(tokens: Sequence[str]) -> str:
    """What is sealed into `minted_tokens`: the tokens as a JSON list."""
    return json.dumps(list(tokens))


def recordable_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens of one message the ETL records in its envelope: distinct, at most MAX_MINTED_TOKENS, none too long.

    The vault returns tokens of its own shape (`ip_…`, `dev_…`); the bound only keeps the field within
    MINTED_FIELD_MAX_BYTES whatever a vault answered.
    """
    kept = [t for t in dict.fromkeys(tokens) if 0 < len(t) <= MINTED_TOKEN_CHARS and t.isascii()]
    return kept[:MAX_MINTED_TOKENS]


def read_dead_letter_body(text: str) -> dict[str, str | None] | None:
    """The envelope's fields, or None when `text` is not one (a message SQS's redrive moved as it was).

    Never raises, whatever `text` holds; a field that is not a string reads as None (`minted_tokens`
    also when absent: every envelope sealed before it).
    """
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError):  # anyone who may send to the DLQ writes its bodies
        return None
    if not isinstance(envelope, dict) or envelope.get("format") != DEAD_LETTER_FORMAT:
        return None
    return {
        k: v if isinstance(v := envelope.get(k), str) else None for k in ("sealed_body", "key", "note", MINTED_FIELD)
    }


class DiscardBodies:
    """A BodySealer that keeps no body at all (ETL_DLQ_BODIES=discard, an operator's explicit choice)."""

    def __init__(self, key_name: str | None = None) -> None:
        self.key_name = key_name
        """The ETL's dead-letter key (ETL_DLQ_SEAL_KEY), though nothing is sealed with it here. A letter
        sealed under it before the switch to discard, moved back to the source queue, cannot be proven
        the ETL's own without OpenBao (`authentic`): it is refused like any other message, its body not
        kept - a producer could write any base64 in its place (service/returned_letters.py)."""

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        """An envelope without the body, for each; no tokens either (`minted` ignored: nothing can seal them)."""
        return [dead_letter_body(None, NOT_KEPT_NO_KEY, None)] * len(bodies)

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        """None: in discard mode the ETL has no OpenBao access to prove a ciphertext genuine."""
        return frozenset()
