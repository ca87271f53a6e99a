"""A take-back keeps in the DLQ only what the ETL wrote there, never what an attribute claims (attack 12, finding 2).

SQS's redrive moves an original with all of its producer's attributes: one named `reason` kept it
in the DLQ for good, its body in clear, and the drain exited 0. What the ETL alone writes is its
envelope (service/sealing.py), and a sealed one is the ETL's only once Transit proves its
ciphertext (`authentic`, one batched rewrap). Over a fake SQS client and a fake prover.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest

from etl_service.adapters.dead_letter_queue import DeadLetterQueue
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints import dead_letters
from etl_service.service.sealing import NOT_KEPT_NO_KEY, NOT_KEPT_TOO_LARGE, dead_letter_body

SOURCE, DLQ = "https://sqs.example/1/login-queue", "https://sqs.example/1/login-queue-dlq"
KEY = "tokenvault-dead-letters"
EVENT = json.dumps({"user_id": "u-1", "ip": "203.0.113.9", "device_id": "dev-1"})
GENUINE = "vault:v1:" + base64.b64encode(bytes(range(40))).decode()
FORGED = "vault:v1:" + base64.b64encode(EVENT.encode()).decode()  # base64 of clear PII: a claim only


class Dlq:
    """An SQS client holding `letters` (id -> (body, reason or None)) in the DLQ; records what is re-sent."""

    def __init__(self, letters: dict[str, tuple[str, str | None]]) -> None:
        self.letters = [_message(mid, body, reason) for mid, (body, reason) in letters.items()]
        self.sent: list[str] = []
        self.deleted: list[str] = []

    def receive_message(self, QueueUrl: str, **_: Any) -> dict[str, Any]:
        assert QueueUrl == DLQ
        batch, self.letters = self.letters[:10], self.letters[10:]
        return {"Messages": batch} if batch else {}

    def send_message(self, QueueUrl: str, MessageBody: str, **_: Any) -> dict[str, Any]:
        assert QueueUrl == SOURCE
        self.sent.append(MessageBody)
        return {"MessageId": f"new-{len(self.sent)}"}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        self.deleted.append(ReceiptHandle.removeprefix("h-"))

    def change_message_visibility_batch(self, **_: Any) -> None:
        """The listing is released."""

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"ApproximateNumberOfMessagesNotVisible": "0"}}


def _message(message_id: str, body: str, reason: str | None) -> dict[str, Any]:
    attributes = {"event_id": {"DataType": "String", "StringValue": f"evt-{message_id}"}}
    if reason is not None:
        attributes["reason"] = {"DataType": "String", "StringValue": reason}
    return {"MessageId": message_id, "ReceiptHandle": f"h-{message_id}", "Body": body, "MessageAttributes": attributes}


class Prover:
    """A BodySealer's proof (Transit rewrap): authenticates `genuine`; records each call."""

    def __init__(self, genuine: Sequence[str] = (GENUINE,), key_name: str | None = KEY) -> None:
        self.genuine = set(genuine)
        self.key_name = key_name
        self.calls: list[list[str]] = []

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        self.calls.append(list(ciphertexts))
        return frozenset(c for c in ciphertexts if c in self.genuine)


def test_a_producer_reason_on_an_original_moved_by_sqs_does_not_keep_it_in_the_dlq() -> None:
    """The reproduction: `reason` set by the producer, body the event in clear."""
    client = Dlq({"reasoned": (EVENT, "login"), "plain": (EVENT, None)})
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven()  # type: ignore[arg-type]
    assert taken.taken == 2 and sorted(client.deleted) == ["plain", "reasoned"]
    assert client.sent == [EVENT, EVENT]


@pytest.mark.parametrize(
    "body",
    [
        EVENT,
        "not json at all",
        json.dumps({"format": "tokenvault-dead-letter/1", "sealed_body": None, "key": None, "note": EVENT}),
        dead_letter_body(GENUINE, None, KEY)[:-1] + ', "ip": "203.0.113.9"}',
        dead_letter_body(GENUINE, None, KEY).replace(": ", ":"),  # not byte for byte what the ETL writes
    ],
    ids=["event", "text", "own-shaped-with-a-foreign-note", "extra-field", "other-spacing"],
)
def test_with_or_without_a_proof_a_reasoned_letter_the_etl_never_writes_is_taken_back(body: str) -> None:
    for prover in (None, Prover()):
        client = Dlq({"odd": (body, "not_json")})
        taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven(prover=prover)  # type: ignore[arg-type]
        assert taken.taken == 1 and client.sent == [body], prover


def test_a_forged_envelope_with_a_reason_is_taken_back_and_a_genuine_one_stays_after_one_proof() -> None:
    client = Dlq(
        {
            "genuine": (dead_letter_body(GENUINE, None, KEY), "missing_field"),
            "genuine-again": (dead_letter_body(GENUINE, None, KEY), "not_json"),  # the same ciphertext, asked once
            "forged": (dead_letter_body(FORGED, None, KEY), "not_json"),
            "too-large": (dead_letter_body(None, NOT_KEPT_TOO_LARGE, None), "body_too_large"),
            "discarded": (dead_letter_body(None, NOT_KEPT_NO_KEY, None), "missing_field"),
            "event": (EVENT, None),
        }
    )
    prover = Prover()
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven(prover=prover)  # type: ignore[arg-type]
    assert taken.taken == 2 and sorted(client.deleted) == ["event", "forged"]
    assert prover.calls == [sorted([GENUINE, FORGED])]  # one proof for the listing, each claim once


def test_a_sealed_letter_under_another_key_is_not_proven_and_is_taken_back() -> None:
    client = Dlq({"other-key": (dead_letter_body(GENUINE, None, "another-key"), "missing_field")})
    prover = Prover()
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven(prover=prover)  # type: ignore[arg-type]
    assert taken.taken == 1 and prover.calls == []  # not even a claim under the ETL's key


def test_a_listing_without_claims_asks_no_proof() -> None:
    client = Dlq({"too-large": (dead_letter_body(None, NOT_KEPT_TOO_LARGE, None), "body_too_large")})
    prover = Prover()
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven(prover=prover)  # type: ignore[arg-type]
    assert taken.taken == 0 and prover.calls == []


def test_without_a_proof_an_envelope_shaped_as_the_etl_writes_stays_whatever_its_ciphertext() -> None:
    """`dead-letters redrive` (the operator may only decrypt) and a discarding ETL cannot prove a ciphertext.

    They keep every envelope shaped as the ETL writes them - taking back a genuine sealed letter would
    loop, or lose its body in a discarding ETL - so a forged one stays too: only the drain of a
    sealing ETL proves it.
    """
    client = Dlq(
        {
            "genuine": (dead_letter_body(GENUINE, None, KEY), "missing_field"),
            "forged": (dead_letter_body(FORGED, None, KEY), "not_json"),
            "other-key": (dead_letter_body(GENUINE, None, "another-key"), "missing_field"),
            "discarded": (dead_letter_body(None, NOT_KEPT_NO_KEY, None), "missing_field"),
            "event": (EVENT, "login"),
        }
    )
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven()  # type: ignore[arg-type]
    assert taken.taken == 1 and client.deleted == ["event"]


def test_the_redrive_command_takes_back_a_reasoned_original(capsys: pytest.CaptureFixture[str]) -> None:
    client = Dlq({"reasoned": (EVENT, "login"), "genuine": (dead_letter_body(GENUINE, None, KEY), "not_json")})
    sweep = DeadLetterSweep(client, SOURCE, DLQ)  # type: ignore[arg-type]
    assert dead_letters._redrive(sweep) == 0
    assert capsys.readouterr().out == "taken back: 1\n" and client.deleted == ["reasoned"]


def test_list_marks_a_body_in_clear_by_the_body_not_by_the_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ETL_DLQ_SEAL_KEY", raising=False)
    client = Dlq(
        {
            "reasoned-original": (EVENT, "login"),
            "lookalike": (dead_letter_body(GENUINE, None, KEY)[:-1] + ', "ip": "203.0.113.9"}', "not_json"),
            "sealed": (dead_letter_body(GENUINE, None, KEY), "missing_field"),
            "not-kept": (dead_letter_body(None, NOT_KEPT_TOO_LARGE, None), "body_too_large"),
            "redriven": (EVENT, None),
        }
    )
    args = dead_letters._parser().parse_args(["list"])
    assert dead_letters._run(args, DeadLetterQueue(client, SOURCE, DLQ), None) == 0  # type: ignore[arg-type]
    rows = capsys.readouterr().out.splitlines()[1:-1]
    kept = {row.split()[0]: row.split()[-1] for row in rows}  # no detail: the body column is the last
    assert kept == {
        "reasoned-original": "CLEAR",
        "lookalike": "CLEAR",
        "sealed": "sealed",
        "not-kept": "-",
        "redriven": "CLEAR",
    }


SHAPES = {  # body -> byte for byte an envelope the ETL writes (sealed under any key, or not kept)?
    dead_letter_body(GENUINE, None, KEY): True,
    dead_letter_body(GENUINE, None, "another-key"): True,
    dead_letter_body(None, NOT_KEPT_TOO_LARGE, None): True,
    dead_letter_body(None, NOT_KEPT_NO_KEY, None): True,
    dead_letter_body(FORGED, None, KEY): True,  # a claim only: shaped as written, proven by a drain alone
    dead_letter_body(None, "a note of someone else's", None): False,
    dead_letter_body("not a ciphertext", None, KEY): False,
    json.dumps({"format": "tokenvault-dead-letter/1", "note": NOT_KEPT_NO_KEY}): False,
    json.dumps(
        {"format": "tokenvault-dead-letter/1", "sealed_body": None, "key": None, "note": NOT_KEPT_NO_KEY}, indent=1
    ): False,
    dead_letter_body(None, NOT_KEPT_NO_KEY, None).replace('"note"', '"extra": 1, "note"'): False,
    '{"format":"tokenvault-dead-letter/1","sealed_body":null,"key":null,"note":null}': False,
    EVENT: False,
    "": False,
    "not json": False,
}


@pytest.mark.parametrize(("body", "shaped"), SHAPES.items())
def test_a_listed_letter_tells_its_shape_and_a_take_back_without_a_proof_keeps_exactly_those(
    body: str, shaped: bool
) -> None:
    """DeadLetter.shaped_as_written (the listing's one reading) as `list`/`erase` use it, and the take-back.

    Without a proof (`dead-letters redrive`) a reasoned letter stays in the DLQ exactly when it is
    shaped as the ETL writes it.
    """
    [letter] = DeadLetterQueue(Dlq({"m-1": (body, "wrong_type")}), SOURCE, DLQ).list()  # type: ignore[arg-type]
    assert letter.shaped_as_written is shaped
    client = Dlq({"m-1": (body, "wrong_type")})
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven()  # type: ignore[arg-type]
    assert taken.taken == (0 if shaped else 1) and client.sent == ([] if shaped else [body])
