"""A sweep deletes what it holds in time linear in the letters it holds, not quadratic.

`dead-letters erase` holds up to 100,000 dead letters (dead_letter_erasure_sweep.MAX_HELD_LETTERS) and
deletes each one that holds the person's values. DeadLetterSweep.delete used to rebuild the list
of held letters on every deletion: deleting all 100,000 compared message ids 5,000,000,000 times.
Counted here, not timed: the fake SQS client below issues message ids that count how often they
are compared or hashed, and stop the test once a deletion costs more than a few of those per
letter. The letters come through the real listing (DeadLetterQueue.list) and hold (as a sweep
holds them), then every one is deleted.
"""

from __future__ import annotations

from typing import Any

import pytest

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints.dead_letter_erasure_sweep import MAX_HELD_LETTERS, PAGE_LETTERS
from tests.unit.dlq_clients import DLQ, SOURCE

UNITS_PER_DELETION = 5
"""Message-id comparisons and hashes one deletion may cost (a dict: one hash); a list rebuilt costs them all."""


class CountedId(str):
    """A message id counting how often it is compared or hashed, failing past `budget` (None: unbounded)."""

    used = 0
    budget: int | None = None

    @classmethod
    def _count(cls) -> None:
        cls.used += 1
        if cls.budget is not None and cls.used > cls.budget:
            cls.budget = None  # once: pytest's report compares ids too
            raise AssertionError("deleting held letters compares message ids per letter held: quadratic")

    def __eq__(self, other: object) -> bool:
        CountedId._count()
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        CountedId._count()
        return str.__ne__(self, other)

    def __hash__(self) -> int:
        CountedId._count()
        return str.__hash__(self)


class ManyLetters:
    """An SQS client serving `count` not-kept dead letters, 10 per receive, each once (a sweep holds them)."""

    def __init__(self, count: int) -> None:
        self.letters = [
            {
                "MessageId": CountedId(f"m-{i}"),
                "ReceiptHandle": f"h-{i}",
                "Body": "{}",
                "MessageAttributes": {"reason": {"DataType": "String", "StringValue": "not_json"}},
            }
            for i in range(count)
        ]
        self.served = 0
        self.deleted = 0
        self.released = 0

    def receive_message(self, QueueUrl: str, **_: Any) -> dict[str, Any]:
        assert QueueUrl == DLQ
        batch = self.letters[self.served : self.served + 10]
        self.served += len(batch)
        return {"Messages": batch} if batch else {}

    def change_message_visibility_batch(self, Entries: list[dict[str, Any]], **_: Any) -> None:
        self.released += sum(1 for e in Entries if e["VisibilityTimeout"] == 0)

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        assert QueueUrl == DLQ
        self.deleted += 1


@pytest.fixture(autouse=True)
def _counting_reset() -> Any:
    yield
    CountedId.used, CountedId.budget = 0, None


def test_deleting_every_letter_a_full_sweep_holds_is_linear() -> None:
    client = ManyLetters(MAX_HELD_LETTERS)
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=lambda: 0.0)  # type: ignore[arg-type]
    held = []
    while sweep.holding < MAX_HELD_LETTERS:  # page by page, as `erase` lists and holds
        page = sweep.list(PAGE_LETTERS)
        sweep.hold(page, 690)
        held += page
    assert len(held) == sweep.holding == MAX_HELD_LETTERS

    CountedId.used, CountedId.budget = 0, UNITS_PER_DELETION * MAX_HELD_LETTERS
    for dead in held:
        sweep.delete(dead)
    assert CountedId.used <= UNITS_PER_DELETION * MAX_HELD_LETTERS
    CountedId.budget = None

    assert (client.deleted, sweep.holding) == (MAX_HELD_LETTERS, 0)
    sweep.keep_held(690)
    sweep.release()
    assert client.released == 0  # nothing deleted is held again or released


def test_a_letter_listed_twice_is_released_under_both_handles_and_once_deleted_under_none() -> None:
    client = ManyLetters(3)
    client.letters.append({**client.letters[0], "ReceiptHandle": "h-0-again"})  # its lease ran out: listed again
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=lambda: 0.0)  # type: ignore[arg-type]
    letters = sweep.list()
    assert [d.receipt_handle for d in letters] == ["h-0-again", "h-1", "h-2"]  # once, its newer handle
    assert sweep.holding == 3
    sweep.delete(letters[1])
    assert sweep.holding == 2
    sweep.release()
    assert client.released == 3  # m-0 under both its handles, m-2; not m-1
