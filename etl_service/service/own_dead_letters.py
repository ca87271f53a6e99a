"""Which DLQ messages are the ETL's own dead letters: told by their bodies, never by an attribute.

A take-back (a drain's, or the operators' `dead-letters redrive`) moves back to the source queue
every DLQ message that is not a dead letter of the ETL's: SQS's redrive policy moved it there as
it was (a crash loop, an outage on its last receive), its body in clear. Attributes cannot tell
the two apart: the redrive moves an original with every attribute its producer set, one named
`reason` included (attack 12, finding 2: such a message stayed in the DLQ for good, in clear,
never loaded, and the drain exited 0). What the ETL alone writes is its body, so:

- a letter without a reason is taken back (whatever its body);
- a letter whose body is not byte for byte an envelope the ETL writes (service/sealing.py
  dead_letter_body: sealed under a key with a ciphertext-shaped body, or not kept with one of the
  ETL's notes) is an original, whatever its attributes: taken back;
- an envelope claiming a ciphertext is the ETL's only when Transit proves the ciphertext genuine
  under the dead-letter key (`authentic`: rewrap, which reveals nothing; for the whole listing, in
  calls of at most 250 claims and 4 MiB each, and a claim longer than an envelope in any SQS
  message holds is not proven without asking: attack 14, finding 2; review 15, finding 6). Any
  base64 - a person's values in clear - has a ciphertext's shape (attack 10, finding 3). An
  unproven one is taken back: the source path refuses it as no event and seals it
  (service/returned_letters.py proves it the same way first).

Without a proof (`prover` None) the last step cannot be taken: every envelope shaped as the ETL
writes it stays, a forged one too. That is the operators' `dead-letters redrive` (the DLQ
operator may decrypt, not rewrap: config/vault/tokenvault-dlq-operator.hcl) and an ETL running
with ETL_DLQ_BODIES=discard (no OpenBao access). Taking back the envelopes they cannot prove
would take back genuine sealed letters: returned to the DLQ unchanged by a sealing ETL, taken
back again, on and on; refused with their bodies dropped by a discarding one. The drain of a
sealing ETL proves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from etl_service.service.returned_letters import ENVELOPE_START, WrittenEnvelope
from etl_service.service.sealing import MINTED_FIELD


class CiphertextProver(Protocol):
    """What of a BodySealer proves a sealed envelope the ETL's own (TransitSealer)."""

    key_name: str | None
    """The dead-letter key (ETL_DLQ_SEAL_KEY) the ETL seals under."""

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        """Those of `ciphertexts` Transit authenticates under the key. DependencyDown, Misconfigured."""
        ...


def read_envelope(body: str, fields: Mapping[str, str | None] | None) -> WrittenEnvelope | None:
    """`written_envelope(body)` for a body already read, without reading it again.

    `fields`: what sealing.read_dead_letter_body read of `body` (None: no envelope). A DLQ listing
    reads each body once and keeps what it read with the letter (DeadLetter.written_envelope). The
    same answer: written_envelope reads a body so only when it begins as the ETL's envelopes do.
    """
    if fields is None or not body.startswith(ENVELOPE_START):
        return None
    return WrittenEnvelope(body, fields["sealed_body"], fields["key"], fields["note"], fields.get(MINTED_FIELD))


def read_shaped_as_written(body: str, fields: Mapping[str, str | None] | None) -> bool:
    """True when `body` is byte for byte an envelope the ETL writes, sealed under any key or not kept.

    `fields`: what sealing.read_dead_letter_body read of `body`; the body is not read again
    (`read_envelope`: DeadLetter.shaped_as_written). A sealed one is only a claim (see the module's
    docstring); one under another key than the ETL's is still shaped as written (an older setting,
    or tampering: `dead-letters list` marks it).
    """
    envelope = read_envelope(body, fields)
    return envelope is not None and _shaped_as_written(envelope)


def own_dead_letters(envelopes: Sequence[WrittenEnvelope | None], prover: CiphertextProver | None) -> list[bool]:
    """For each DLQ message with a reason, whether it is a dead letter the ETL wrote.

    `envelopes`: each message's body as read as an ETL envelope (`read_envelope`, as its listing
    read it: DeadLetter.written_envelope), None when it is none; no body is read again here.
    With a `prover`: exactly an envelope of the ETL's (`is_own`), a sealed one proven by one
    `authentic` call over the distinct claims, none when there are none. Without: shaped as
    written (`read_shaped_as_written`), unproven.
    DependencyDown or Misconfigured from the prover.
    """
    if prover is None:
        return [e is not None and _shaped_as_written(e) for e in envelopes]
    key = prover.key_name
    claims = sorted({c for e in envelopes if e is not None and (c := e.claimed_ciphertext(key)) is not None})
    authentic = prover.authentic(claims) if claims else frozenset()
    return [e is not None and e.is_own(key, authentic) for e in envelopes]


def _shaped_as_written(envelope: WrittenEnvelope) -> bool:
    key = envelope.key
    return envelope.claimed_ciphertext(key) is not None if key is not None else envelope.is_own(None)
