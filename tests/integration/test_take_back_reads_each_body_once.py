"""A drain's take-back reads each DLQ body once, as its listing read it, and decides as before.

The listing reads every body (sealing.read_dead_letter_body) and keeps what it read with the letter;
the take-back then told the ETL's own letters from the rest by reading every body shaped as an
envelope again (own_dead_letters via returned_letters.written_envelope). It now decides from the
listing's reading (DeadLetter.written_envelope), and the decision is the same: the ETL's sealed
letter (proven by Transit) and its body-less ones stay, a forged claim, a loose envelope and an
original are taken back. Real SQS (ministack) and OpenBao (the drain's TransitSealer proves the
claims); the take-back runs in-process so the envelope reader's JSON parse can be counted.
Synthetic values only.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from etl_service.adapters.sqs import SqsQueue
from etl_service.service.sealing import DEAD_LETTER_FORMAT, NOT_KEPT_NO_KEY, NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.integration.counted_parses import WRONG_TYPE, count_envelope_parses, dlq_sealer, fresh_queues


def test_the_drain_take_back_reads_each_body_once_and_decides_as_before(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, queue_url, dlq_url, sqs = fresh_queues(stack_env)
    sealer = dlq_sealer(stack_env)
    [sealed] = sealer.seal([json.dumps({"user_id": f"sealed-{tag}"})])  # the ETL's: proven, stays
    in_clear = base64.b64encode(json.dumps({"user_id": f"forged-{tag}"}).encode()).decode()
    forged = dead_letter_body("vault:v1:" + in_clear, None, sealer.key_name)  # a claim Transit refuses
    too_large = dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)  # the ETL's, body-less: stays
    discarded = dead_letter_body(None, NOT_KEPT_NO_KEY, None)  # the same
    loose = json.dumps(  # shaped like an envelope, not one the ETL writes: taken back
        {"format": DEAD_LETTER_FORMAT, "sealed_body": None, "key": None, "note": "x", "user_id": f"loose-{tag}"}
    )
    original = json.dumps({"user_id": f"original-{tag}"})  # an event SQS's redrive moved, `reason` its producer's
    bodies = {"sealed": sealed, "forged": forged, "too-large": too_large, "discarded": discarded, "loose": loose}
    sent = {**bodies, "original": original}
    entries: list[Any] = [{"Id": n, "MessageBody": b, "MessageAttributes": WRONG_TYPE} for n, b in sent.items()]
    sqs.send_message_batch(QueueUrl=dlq_url, Entries=entries)
    parsed = count_envelope_parses(monkeypatch)

    taken = SqsQueue(sqs, queue_url, dlq_url, prover=sealer).take_back_redriven()

    assert (taken.taken, taken.complete) == (3, True)
    assert sorted(_bodies(sqs, queue_url)) == sorted([forged, loose, original])
    assert {name: parsed[body] for name, body in bodies.items()} == {
        "sealed": 1,
        "forged": 1,
        "too-large": 1,
        "discarded": 1,
        "loose": 1,
    }  # each envelope-shaped body was read twice: by the listing, then by own_dead_letters


def _bodies(sqs: Any, queue_url: str) -> list[str]:
    """Every body in the queue (received until a receive answers empty)."""
    found: list[str] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        found.extend(m["Body"] for m in batch)
    return found
