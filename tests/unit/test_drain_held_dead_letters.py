"""A drain waits for DLQ letters another reader holds, but not without bound (attack 10, finding 5).

A killed take-back's listing comes back within its 60 s lease, so the drain waits for it; an
operator's `dead-letters erase` (held for `--wait` + 600 s) or a killed erase run held every
`--until-empty` drain for that long. Past the bound the drain ends, reports the letters held
unread, and exits 3 (nothing lost: they stay in the DLQ). Over the unit fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest

from etl_service.adapters import dead_letter_queue
from etl_service.adapters.dead_letter_queue import DeadLetterQueue
from etl_service.adapters.sqs import SqsQueue
from etl_service.entrypoints.cli import EXIT_OK, EXIT_UNPROCESSED, drain_status
from etl_service.service.drain_check import DrainCheck, default_held_wait_seconds
from etl_service.service.gate import DependencyGate
from etl_service.service.inflight import InFlight
from etl_service.service.outcomes import RunSummary
from etl_service.service.ports import TakeBack
from tests.unit.dlq_clients import DLQ, SOURCE, LargeDlq
from tests.unit.etl_builders import consumer, messages
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer


class HeldDeadLetters(FakeQueue):
    """A DLQ where `held` letters are held by another reader until `released_at` (monotonic), if ever."""

    def __init__(self, held: int, released_at: float | None = None) -> None:
        super().__init__()
        self.held = held
        self.released_at = released_at

    def dead_letters_held(self) -> int:
        if self.released_at is not None and time.monotonic() >= self.released_at:
            with self.lock:  # the other reader's lease ran out: visible again, reasonless
                self.redriven += [replace(m, message_id=f"dlq-{m.message_id}") for m in messages(self.held)]
                self.held, self.released_at = 0, None
        return self.held


def drained_within(queue: FakeQueue, seconds: float, held_wait: float) -> RunSummary:
    """Drain `queue` (waiting `held_wait` s for held dead letters); fail (and stop it) if not ended within `seconds`."""
    c = consumer(queue, FakeTokenizer(), FakeLoginStore(), batch_size=10, held_dead_letters_wait_seconds=held_wait)
    result: list[RunSummary] = []
    thread = threading.Thread(target=lambda: result.append(c.drain()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        c.stop()
        thread.join(30)
        pytest.fail(f"the drain did not end within {seconds} s")
    return result[0]


def test_a_drain_ends_past_its_wait_for_held_dead_letters_and_says_how_many_it_left_unread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = HeldDeadLetters(held=3)  # held for hours: an operator's erase run, killed
    queue.pending = messages(20)
    started = time.monotonic()
    summary = drained_within(queue, 10, held_wait=1.0)
    assert time.monotonic() - started >= 1.0  # it did wait
    assert summary.loaded == 20 and summary.dead_letters_held_unread == 3
    with caplog.at_level(logging.ERROR, logger="etl_service"):
        assert drain_status(summary) == EXIT_UNPROCESSED
    assert "3 dead letter(s) held unread" in caplog.text and "Nothing is lost" in caplog.text


def test_a_dead_letter_back_within_the_wait_is_taken_back_and_the_drain_ends_clean() -> None:
    queue = HeldDeadLetters(held=1, released_at=time.monotonic() + 1.0)  # a killed take-back's listing
    queue.pending = messages(5)
    summary = drained_within(queue, 10, held_wait=5.0)
    assert summary.taken_back_from_dlq == 1 and summary.loaded == 6 and summary.dead_letters_held_unread == 0
    assert drain_status(summary) == EXIT_OK


def test_the_default_wait_outlasts_the_take_back_listing_lease() -> None:
    sqs = SqsQueue(None, SOURCE, DLQ)  # type: ignore[arg-type]
    assert sqs.dead_letter_listing_lease_seconds == dead_letter_queue.LISTING_LEASE_SECONDS  # the port says it
    lease = dead_letter_queue.LISTING_LEASE_SECONDS
    assert default_held_wait_seconds(lease) >= lease + 20
    check = DrainCheck(sqs, InFlight(10, 1), DependencyGate(lambda: None))
    assert check.held_wait_seconds == default_held_wait_seconds(lease)  # what a drain waits, by default


class LargerDlqThanOneListing(FakeQueue):
    """A DLQ (the real adapter over a fake SQS client) holding more letters with a reason than one
    take-back lists (`limit`), then one without: attack 11, finding 2 with a limit of 20, not 10,000."""

    def __init__(self, reasoned: int, limit: int) -> None:
        super().__init__()
        self.client = LargeDlq(reasoned)
        self.limit = limit

    def take_back_redriven(self) -> TakeBack:
        return DeadLetterQueue(self.client, SOURCE, DLQ).take_back_redriven(limit=self.limit)  # type: ignore[arg-type]


def test_a_drain_that_cannot_read_the_whole_dlq_does_not_exit_0_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    queue = LargerDlqThanOneListing(reasoned=20, limit=20)  # the reasonless letter lies past the limit
    queue.pending = messages(5)
    started = time.monotonic()
    summary = drained_within(queue, 10, held_wait=1.0)
    with caplog.at_level(logging.ERROR, logger="etl_service"):
        assert drain_status(summary) == EXIT_UNPROCESSED  # it exited 0 with the letter still in the DLQ
    assert time.monotonic() - started >= 1.0  # it did go on trying for the wait
    assert summary.loaded == 5 and summary.dlq_unread and summary.taken_back_from_dlq == 0
    assert "DLQ could not be read whole" in caplog.text and "Nothing is lost" in caplog.text
    assert queue.client.sent == []  # and nothing was taken back twice or lost: the letter is still there


def test_a_drain_whose_take_back_reads_the_dlq_whole_takes_the_letter_back_and_exits_0() -> None:
    queue = LargerDlqThanOneListing(reasoned=18, limit=20)
    queue.pending = messages(5)
    summary = drained_within(queue, 10, held_wait=1.0)
    assert summary.taken_back_from_dlq == 1 and not summary.dlq_unread and drain_status(summary) == EXIT_OK


class ReaderBetweenCountAndListing:
    """An SQS client whose DLQ holds one reasonless letter (a valid event), leased and released as SQS does.

    `reader_holds()` plays another reader (an operator's `dead-letters list`) receiving it for
    `seconds`: the letter is invisible, SQS counts it in flight.
    """

    def __init__(self, body: str) -> None:
        self.letter = {
            "MessageId": "redriven-1",
            "ReceiptHandle": "h-redriven-1",
            "Body": body,
            "MessageAttributes": {"event_id": {"DataType": "String", "StringValue": "evt-redriven-1"}},
        }
        self.visible_at: float | None = 0.0  # None: deleted
        self.sent: list[str] = []

    def reader_holds(self, seconds: float) -> None:
        self.visible_at = time.monotonic() + seconds

    def _visible(self) -> bool:
        return self.visible_at is not None and self.visible_at <= time.monotonic()

    def receive_message(self, QueueUrl: str, VisibilityTimeout: int, **_: object) -> dict[str, object]:
        if not self._visible():
            return {}
        self.visible_at = time.monotonic() + VisibilityTimeout
        return {"Messages": [self.letter]}

    def change_message_visibility_batch(self, **_: object) -> None:
        if self.visible_at is not None:
            self.visible_at = time.monotonic()

    def delete_message(self, **_: object) -> None:
        self.visible_at = None

    def send_message(self, MessageBody: str, **_: object) -> dict[str, str]:
        self.sent.append(MessageBody)
        return {"MessageId": "new-1"}

    def get_queue_attributes(self, **_: object) -> dict[str, dict[str, str]]:
        held = self.visible_at is not None and not self._visible()
        return {"Attributes": {"ApproximateNumberOfMessagesNotVisible": str(int(held))}}


class DlqReadBetweenCountAndTakeBack(FakeQueue):
    """The source queue faked, the DLQ through the real adapters: right after the drain's first count of
    held dead letters, a reader picks up the reasonless letter for `seconds` (attack 12, finding 6)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.client = ReaderBetweenCountAndListing(messages(1)[0].body)
        self.sqs = SqsQueue(self.client, SOURCE, DLQ)  # type: ignore[arg-type]
        self.seconds = seconds
        self.counts = 0

    def dead_letters_held(self) -> int:
        held = self.sqs.dead_letters_held()
        self.counts += 1
        if self.counts == 1:
            self.client.reader_holds(self.seconds)  # between this count and the take-back's listing
        return held

    def take_back_redriven(self) -> TakeBack:
        took = self.sqs.take_back_redriven()
        with self.lock:
            self.pending += [replace(messages(1)[0], message_id=f"back-{i}") for i in range(len(self.client.sent))]
            self.client.sent = []
        return took


def test_a_letter_a_reader_picks_up_between_the_held_count_and_the_take_back_is_waited_for() -> None:
    queue = DlqReadBetweenCountAndTakeBack(seconds=1.0)
    queue.pending = messages(3)
    summary = drained_within(queue, 10, held_wait=5.0)
    assert summary.taken_back_from_dlq == 1 and summary.dead_letters_held_unread == 0
    assert summary.loaded == 4 and queue.client.visible_at is None and drain_status(summary) == EXIT_OK


def test_a_letter_a_reader_holds_past_the_wait_ends_the_drain_non_zero() -> None:
    queue = DlqReadBetweenCountAndTakeBack(seconds=60.0)
    queue.pending = messages(3)
    summary = drained_within(queue, 10, held_wait=1.0)
    assert summary.taken_back_from_dlq == 0 and summary.dead_letters_held_unread == 1
    assert drain_status(summary) == EXIT_UNPROCESSED and queue.client.visible_at is not None  # still in the DLQ
