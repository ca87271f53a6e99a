"""An envelope opened inside a dead letter is a layer with its own body and answers (review 16, finding 7).

`envelope_layers` built each inner layer with `replace(dead, sealed_body=..., key=..., note=...)`,
which kept the outer letter's `raw_body`, `is_envelope` and `shaped_as_written`: the inner layer's
`written_envelope` paired the outer body with the inner fields, and its `shaped_as_written` was
the outer body's. Each inner layer now reads as a letter built from its own text would.
"""

from __future__ import annotations

import base64
import json

import pytest

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.entrypoints.dead_letter_layers import envelope_layers
from etl_service.service.sealing import DEAD_LETTER_FORMAT, dead_letter_body

KEY = "tokenvault-dlq"
OUTER, MIDDLE = "vault:v1:" + base64.b64encode(b"o" * 40).decode(), "vault:v1:" + base64.b64encode(b"m" * 40).decode()


def _letter(raw_body: str, sealed_body: str) -> DeadLetter:
    """A letter of `raw_body` listed by itself (its answers read from it), sealed as `sealed_body` under KEY."""
    return DeadLetter("m-1", "rh-1", None, "", "m-1", 1764790000000, sealed_body, KEY, None, raw_body)


def _outer() -> DeadLetter:
    return _letter(dead_letter_body(OUTER, None, KEY), OUTER)


INNER_AS_WRITTEN = dead_letter_body(MIDDLE, None, KEY)
INNER_LOOSE = json.dumps({"note": None, "key": KEY, "sealed_body": MIDDLE, "format": DEAD_LETTER_FORMAT}, indent=1)
"""An envelope an older ETL, or anyone, wrote in another layout: read as one, not shaped as the ETL writes."""


@pytest.mark.parametrize("inner_text", [INNER_AS_WRITTEN, INNER_LOOSE])
def test_an_inner_layer_reads_as_a_letter_of_its_own_text(inner_text: str) -> None:
    outer = _outer()
    assert outer.shaped_as_written and outer.written_envelope is not None
    opened = {OUTER: inner_text, MIDDLE: "original body"}
    layers = envelope_layers(outer, KEY, opened.__getitem__)
    assert (layers.texts, layers.stop) == ([inner_text, "original body"], None)
    on_its_own = _letter(inner_text, MIDDLE)
    inner = layers.layer
    assert (inner.sealed_body, inner.key, inner.note) == (MIDDLE, KEY, None)
    assert inner.raw_body == inner_text
    assert inner.is_envelope is True
    assert inner.shaped_as_written == on_its_own.shaped_as_written
    assert inner.written_envelope == on_its_own.written_envelope
    assert inner.message_id == outer.message_id  # the SQS metadata stays the letter's


def test_a_loose_inner_envelope_is_not_taken_for_one_shaped_as_written() -> None:
    layers = envelope_layers(_outer(), KEY, {OUTER: INNER_LOOSE, MIDDLE: "original body"}.__getitem__)
    assert layers.layer.shaped_as_written is False
    assert layers.layer.written_envelope is None
