"""A dead letter's envelope opened layer by layer: one routine for `dead-letters show/resend` and `erase`.

An older ETL sealed a dead letter moved back to the source queue (a DLQ redrive) again
(insider round 9, Break 8), so what an envelope holds may itself be an envelope. Each layer is
opened as the first: with the dead-letter key only - an envelope naming another key is
tampering, and is never sent to OpenBao - and at most MAX_LAYERS deep. `show`/`resend` and
`erase` stop at the same layer for the same reason (`Stop`): show and resend say which and
exit 1, erase counts it (exit 3). Whether a letter's body is in clear at all (`in_clear`) is
decided here too, for `list`, `show`, `resend` and `erase` alike: by the body, never by a
`reason` attribute.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.adapters.transit_sealer import SealedBodyUnopenable
from etl_service.service.own_dead_letters import read_shaped_as_written
from etl_service.service.sealing import MAX_MINTED_TOKENS, MINTED_FIELD, read_dead_letter_body

MAX_LAYERS = 4
"""Envelopes opened inside one another at most; a sealed layer deeper than that is not opened."""
TOKEN_SHAPE = re.compile(r"(ip|dev)_[A-Za-z0-9_-]{22}")
"""The vault's tokens, as tokenvault_client.models reads them (not imported: the dead-letter commands start
without gRPC); a recorded minted token of another shape is not printed."""


class Stop(enum.Enum):
    """Why opening stopped before reaching a text that is no envelope."""

    NOT_KEPT = "not kept"
    """The layer holds no sealed body (ETL_DLQ_BODIES=discard, or a message SQS's redrive moved as it was)."""
    TAMPERED = "tampered"
    """The layer's envelope names a Transit key other than the dead-letter key: not opened."""
    UNOPENABLE = "unopenable"
    """OpenBao refused the layer's ciphertext, or what it decrypted is no text."""
    TOO_DEEP = "too deep"
    """MAX_LAYERS envelopes were opened and the next is sealed too: not opened."""


@dataclass(frozen=True)
class Layers:
    """What opening one dead letter gave."""

    texts: list[str]
    """What each opened layer held, outermost first; the last is the original body when `stop` is None."""
    stop: Stop | None
    """Why opening stopped early, or None."""
    layer: DeadLetter
    """The layer opening stopped at (its key, its note), or the last one opened."""
    refusal: str = ""
    """Why OpenBao would not open it, when UNOPENABLE."""
    minted: tuple[str, ...] = ()
    """The sealed `minted_tokens` of each layer reached that carries them (under the dead-letter key): the
    tokens the vault minted for the message before it was dead-lettered, not opened yet (`open_minted`)."""

    @property
    def body_read(self) -> bool:
        """Whether the last text reached is a body, no envelope: every envelope opened, or the letter's body in clear.

        From what opening already read (each opened text read once, the letter's body by its
        listing): False when it stopped at an envelope (not kept, tampered, unopenable, too deep).
        """
        return self.stop is None or (not self.texts and not self.layer.is_envelope)

    @property
    def depth(self) -> int:
        """How many layers were opened (the stopping layer is layer depth + 1)."""
        return len(self.texts)


def is_tampered(letter: DeadLetter, key: str) -> bool:
    """A sealed envelope naming a key other than the dead-letter key `key`: the ETL did not write it."""
    return letter.sealed_body is not None and letter.key != key


def outer_record(letter: DeadLetter, key: str) -> str | None:
    """The sealed `minted_tokens` of `letter`'s outer envelope as `envelope_layers` collects it, or None.

    None on a tampered envelope (naming another key: neither its body nor its record is the ETL's, and
    none of it is sent to OpenBao) and on one without a sealed body (the sealer records tokens only beside
    a body it sealed): the sweep never reads those, so `delete` does not refuse for them (review 39).
    """
    if is_tampered(letter, key) or not (letter.sealed_body and letter.key):
        return None
    return letter.minted_tokens


def in_clear(letter: DeadLetter, key: str) -> bool:
    """True when `letter`'s body is no envelope the ETL writes: an original SQS's redrive moved as it was.

    Told by the body alone (own_dead_letters.read_shaped_as_written, as a take-back tells it), whatever
    the letter's attributes: SQS's redrive moves an original with every attribute its producer set,
    one named `reason` included (attack 12, finding 2). A tampered envelope (`is_tampered`) is not
    in clear, though its shape be loose: `list` marks it TAMPERED and show/resend refuse it. The
    body is not read again: its listing read it once and recorded both answers
    (DeadLetter.is_envelope, DeadLetter.shaped_as_written).
    """
    return not letter.is_envelope or (not is_tampered(letter, key) and not letter.shaped_as_written)


def envelope_layers(dead: DeadLetter, key: str, decrypt: Callable[[str], str]) -> Layers:
    """Open `dead`'s envelope, and each envelope found inside, with `decrypt` (a ciphertext -> its text).

    `decrypt` opens with the dead-letter key `key`; its SealedBodyUnopenable stops at that layer,
    anything else it raises (OpenBao unreachable, the key unusable) goes up to the caller.
    """
    texts: list[str] = []
    minted: list[str] = []
    layer = dead
    while True:
        if is_tampered(layer, key):
            return Layers(texts, Stop.TAMPERED, layer, minted=tuple(minted))
        if not (layer.sealed_body and layer.key):
            return Layers(texts, Stop.NOT_KEPT, layer, minted=tuple(minted))
        if layer.minted_tokens:  # under the dead-letter key, as the body beside it
            minted.append(layer.minted_tokens)
        if len(texts) == MAX_LAYERS:
            return Layers(texts, Stop.TOO_DEEP, layer, minted=tuple(minted))
        try:
            texts.append(decrypt(layer.sealed_body))
        except SealedBodyUnopenable as error:
            return Layers(texts, Stop.UNOPENABLE, layer, str(error), tuple(minted))
        inner = read_dead_letter_body(texts[-1])
        if inner is None:
            return Layers(texts, None, layer, minted=tuple(minted))
        layer = inner_layer(dead, texts[-1], inner)


@dataclass(frozen=True)
class MintedTokens:
    """The tokens a dead letter's envelopes record as minted for its message (`open_minted`)."""

    tokens: tuple[str, ...]
    """Each token once, in the order recorded."""
    unopenable: int
    """Sealed records OpenBao would not open, or whose text is no list of tokens (forged, or a retired key)."""


def open_minted(sealed: Sequence[str], decrypt: Callable[[str], str]) -> MintedTokens:
    """Open each sealed `minted_tokens` record (Layers.minted) with `decrypt`; keep what is a list of tokens.

    Only texts shaped as the vault's tokens (`ip_…`, `dev_…`: TOKEN_SHAPE) are kept:
    a record is sealed under the dead-letter key, which the ETL alone encrypts with, but whoever copies
    it or plants a garbage one gets nothing else printed. A record is kept only as the sealer writes
    one (`is_one_events`): one event has one ip and one device id, so a list of more than
    MAX_MINTED_TOKENS, or of two ip tokens or two device tokens, is not the ETL's record of an event
    but a forgery by its identity (attack 38, M5: 100 token-shaped strings spent the privacy
    officer's erase budget on NOT_FOUND) - counted as unopenable, its letter named.
    SealedBodyUnopenable counts as unopenable; anything else `decrypt` raises (OpenBao unreachable,
    the key unusable) goes up to the caller.
    """
    tokens: dict[str, None] = {}
    unopenable = 0
    for text in sealed:
        try:
            opened = decrypt(text)  # a ConfigError (a ValueError: no operator's token) goes up, never "unopenable"
        except SealedBodyUnopenable:
            unopenable += 1
            continue
        try:
            found = json.loads(opened)
        except (ValueError, RecursionError):
            unopenable += 1
            continue
        if not is_one_events(found):
            unopenable += 1
            continue
        tokens.update(dict.fromkeys(found))
    return MintedTokens(tuple(tokens), unopenable)


def is_one_events(found: object) -> bool:
    """Whether `found` (a record's JSON) is what the sealer records for one event: at most one ip and one device token.

    A JSON list of at most MAX_MINTED_TOKENS texts shaped as the vault's tokens (TOKEN_SHAPE), at most one
    of them `ip_…` and at most one `dev_…` (recordable_tokens writes no more: one Tokenize call per event).
    """
    if not isinstance(found, list) or len(found) > MAX_MINTED_TOKENS:
        return False
    if not all(isinstance(t, str) and TOKEN_SHAPE.fullmatch(t) for t in found):
        return False
    kinds = [t.split("_", 1)[0] for t in found]
    return kinds.count("ip") <= 1 and kinds.count("dev") <= 1


def inner_layer(dead: DeadLetter, text: str, fields: dict[str, str | None]) -> DeadLetter:
    """The envelope `text` found inside `dead` (read as `fields`) as a letter of its own: its body, its answers.

    `dead`'s SQS metadata (message id, receipt handle, reason, times) is kept; the body and what
    was read of it are the inner text's: `raw_body`, `is_envelope`, `shaped_as_written`, so
    `written_envelope` pairs the inner body with the inner fields. `replace(dead, sealed_body=...,
    key=..., note=...)` alone carried the outer body and its cached answers into the inner layer
    (review 16, finding 7).
    """
    return replace(
        dead,
        sealed_body=fields["sealed_body"],
        key=fields["key"],
        note=fields["note"],
        minted_tokens=fields.get(MINTED_FIELD),
        raw_body=text,
        is_envelope=True,
        shaped_as_written=read_shaped_as_written(text, fields),
    )
