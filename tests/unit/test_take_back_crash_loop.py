"""A take-back feeds a message back once: the redrive moving it again means a crash loop (review 20, R20-12).

Run mode takes back the DLQ's reasonless messages every 5 minutes. A message that kills the ETL
before it can dead-letter it (OOM, a native crash) was fed back for ever, each time taking its
batch-mates' receives with it. Each take-back now counts itself on the copy it sends; one the
redrive moved again is sealed and dead-lettered in place as `crash_loop`. Over a fake SQS client.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from etl_service.adapters.crash_loop_letters import TAKEN_BACK_ATTRIBUTE
from etl_service.adapters.sqs import SqsQueue
from etl_service.entrypoints.cli import EXIT_UNPROCESSED, drain_status, format_summary
from etl_service.entrypoints.metrics import MetricsObserver
from etl_service.errors import Misconfigured
from etl_service.service.drain_check import DrainCheck
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.outcomes import CRASH_LOOP
from etl_service.service.periodic_take_back import PeriodicTakeBack
from etl_service.service.ports import TakeBack
from etl_service.service.sealing import dead_letter_body, read_dead_letter_body
from tests.unit.etl_builders import consumer
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

SOURCE, DLQ = "https://sqs.example/1/login-queue", "https://sqs.example/1/login-queue-dlq"
DEVICE = "dev-4242-4242"
EVENT = json.dumps({"user_id": "u-1", "ip": "203.0.113.9", "device_id": DEVICE})


class Queues:
    """An SQS client with a source queue and its DLQ; `redrive` moves the source's messages to the DLQ as SQS does."""

    def __init__(self) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {SOURCE: [], DLQ: []}
        self.sent = 0
        self.held: set[str] = set()

    def put(self, url: str, body: str, attributes: dict[str, Any]) -> None:
        self.sent += 1
        self.queues[url].append(
            {
                "MessageId": f"m{self.sent}",
                "ReceiptHandle": f"h-m{self.sent}",
                "Body": body,
                "MessageAttributes": attributes,
                "Attributes": {"SentTimestamp": str(1_733_300_000_000 + self.sent)},
            }
        )

    def redrive(self) -> None:
        """The crash loop's maxReceiveCount receives, then SQS moves each message to the DLQ with its attributes."""
        self.queues[DLQ] += self.queues[SOURCE]
        self.queues[SOURCE] = []

    def receive_message(self, QueueUrl: str, **_: Any) -> dict[str, Any]:
        assert QueueUrl == DLQ
        batch = [m for m in self.queues[DLQ] if m["MessageId"] not in self.held][:10]
        self.held |= {m["MessageId"] for m in batch}
        return {"Messages": batch} if batch else {}

    def send_message(self, QueueUrl: str, MessageBody: str, MessageAttributes: dict[str, Any]) -> dict[str, Any]:
        self.put(QueueUrl, MessageBody, MessageAttributes)
        return {"MessageId": f"m{self.sent}"}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        self.queues[QueueUrl] = [m for m in self.queues[QueueUrl] if m["ReceiptHandle"] != ReceiptHandle]

    def change_message_visibility_batch(self, **_: Any) -> None:
        self.held = set()

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"ApproximateNumberOfMessagesNotVisible": "0"}}


class Sealer:
    """A BodySealer whose envelope holds no body in clear; records what it sealed."""

    key_name = "tokenvault-dead-letters"

    def __init__(self) -> None:
        self.sealed: list[str] = []

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        self.sealed += bodies
        return [dead_letter_body(_ciphertext(len(self.sealed)), None, self.key_name) for _ in bodies]

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        return frozenset(c for c in ciphertexts if c in {_ciphertext(n) for n in range(1, len(self.sealed) + 1)})


def _ciphertext(n: int) -> str:
    return "vault:v1:" + base64.b64encode(bytes([n]) * 40).decode()


def _attribute(message: dict[str, Any], name: str) -> str | None:
    value = message["MessageAttributes"].get(name)
    return value["StringValue"] if value else None


def test_a_message_the_redrive_moves_again_after_a_take_back_is_sealed_in_place_not_fed_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, sealer = Queues(), Sealer()
    queue = SqsQueue(client, SOURCE, DLQ, prover=sealer, sealer=sealer)  # type: ignore[arg-type]
    event_id = {"DataType": "String", "StringValue": "evt-1"}
    client.put(DLQ, EVENT, {"event_id": event_id})  # the redrive moved it: no reason

    assert queue.take_back_redriven().taken == 1  # the first take-back: back to the source, counted
    [copy] = client.queues[SOURCE]
    assert copy["Body"] == EVENT and _attribute(copy, TAKEN_BACK_ATTRIBUTE) == "1" and not sealer.sealed

    client.redrive()  # it crashed the ETL maxReceiveCount times again
    with caplog.at_level(logging.WARNING):
        assert queue.take_back_redriven().taken == 0
    assert not client.queues[SOURCE] and sealer.sealed == [EVENT]
    [letter] = client.queues[DLQ]
    assert _attribute(letter, "reason") == CRASH_LOOP and _attribute(letter, "event_id") == "evt-1"
    assert _attribute(letter, "source_message_id") == copy["MessageId"]
    assert (read_dead_letter_body(letter["Body"]) or {}).get("sealed_body") == _ciphertext(1)
    assert any(getattr(r, "message_id", None) == copy["MessageId"] for r in caplog.records)
    assert DEVICE not in caplog.text and "203.0.113.9" not in caplog.text

    assert queue.take_back_redriven().taken == 0 and client.queues[DLQ] == [letter]  # kept: the operator decides


def test_a_crash_loop_letter_drops_an_event_id_carrying_its_own_device_id() -> None:
    client, sealer = Queues(), Sealer()
    queue = SqsQueue(client, SOURCE, DLQ, prover=sealer, sealer=sealer)  # type: ignore[arg-type]
    attributes = {
        "event_id": {"DataType": "String", "StringValue": f"{DEVICE}:1733300000"},
        TAKEN_BACK_ATTRIBUTE: {"DataType": "Number", "StringValue": "1"},
    }
    client.put(DLQ, EVENT, attributes)
    assert queue.take_back_redriven().taken == 0
    [letter] = client.queues[DLQ]
    assert _attribute(letter, "reason") == CRASH_LOOP and _attribute(letter, "event_id") is None


def test_without_a_sealer_the_operators_redrive_sends_it_back_counted() -> None:
    client = Queues()
    client.put(DLQ, EVENT, {TAKEN_BACK_ATTRIBUTE: {"DataType": "Number", "StringValue": "1"}})
    assert SqsQueue(client, SOURCE, DLQ).take_back_redriven().taken == 1  # type: ignore[arg-type]
    assert _attribute(client.queues[SOURCE][0], TAKEN_BACK_ATTRIBUTE) == "2"


@pytest.mark.parametrize("mode", ["run", "drain"])
def test_a_crash_loop_letter_counts_in_the_dead_letter_metric_under_its_reason(mode: str) -> None:
    # Before, it was only logged (and counted on the DeadLetterQueue object): etl_messages_quarantined_total
    # never showed it, so neither alert on dead letters (EtlEventsDeadLetteredUnloaded pages) could fire.
    client, sealer = Queues(), Sealer()
    queue = SqsQueue(client, SOURCE, DLQ, prover=sealer, sealer=sealer)  # type: ignore[arg-type]
    client.put(DLQ, EVENT, {TAKEN_BACK_ATTRIBUTE: {"DataType": "Number", "StringValue": "1"}})
    before = _crash_loops_counted()
    gate, failed = DependencyGate(lambda: None), list[Misconfigured]()
    if mode == "run":
        assert PeriodicTakeBack(queue, gate, 300.0, MetricsObserver(), failed.append).take_back_once() == 0
    else:
        DrainCheck(queue, InFlight(10, 1), gate, 5, MetricsObserver()).drained()
    [letter] = client.queues[DLQ]
    assert _attribute(letter, "reason") == CRASH_LOOP and not failed
    assert _crash_loops_counted() == before + 1


def _crash_loops_counted() -> float:
    return REGISTRY.get_sample_value("etl_messages_quarantined_total", {"reason": CRASH_LOOP}) or 0.0


class CrashLoopInTheDlq(FakeQueue):
    """An empty source queue whose DLQ holds one message the redrive moved again after a take-back."""

    def __init__(self) -> None:
        super().__init__()
        self.sealed_in_place = 1

    def take_back_redriven(self) -> TakeBack:
        looped, self.sealed_in_place = self.sealed_in_place, 0
        return TakeBack(0, crash_looped=looped)


def test_a_drain_that_sealed_a_crash_loop_says_so_and_does_not_exit_0(caplog: pytest.LogCaptureFixture) -> None:
    # Before, the drain counted the crash loop in the metric only: its summary had no line for it and it
    # exited 0, although a good event was left sealed in the DLQ, unloaded, for the operator to resend.
    summary = consumer(CrashLoopInTheDlq(), FakeTokenizer(), FakeLoginStore(), batch_size=10).drain()

    assert summary.crash_looped == 1 and summary.loaded == 0
    assert "crash loops       : 1" in format_summary(summary)
    with caplog.at_level(logging.ERROR):
        assert drain_status(summary) == EXIT_UNPROCESSED
    assert f"1 message(s) sealed in the DLQ as {CRASH_LOOP}" in caplog.text
