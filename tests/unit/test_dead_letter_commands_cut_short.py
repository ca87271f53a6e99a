"""`dead-letters list` and `erase` say when their DLQ listing was cut short, and exit 3.

They list the DLQ as a drain's take-back and `redrive` do (at most 10,000 letters, within one
60 s lease, a letter listed twice ends it), but said nothing when the listing stopped short:
`list` exited 0 over part of the DLQ, and `erase`, trusting SQS's approximate counts (which lag),
exited 0 having never examined a letter past the limit that held the person's values. Over a fake
SQS client (tests/unit/test_dead_letter_listing.py's LargeDlq): 10,000 letters and a slow SQS.
"""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest

from etl_service.adapters.dead_letter_queue import LISTING_LIMIT, DeadLetterError
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints import dead_letter_erasure, dead_letter_erasure_sweep, dead_letters
from tests.unit.dlq_clients import DLQ, SOURCE, LargeDlq

ERASED_USER = "u-erased-4711"


class SweptDlq(LargeDlq):
    """LargeDlq as `erase` uses it too: leases held for as long as asked, deletions, approximate counts.

    `counts_lag`: GetQueueAttributes answers 0 for every count, as SQS's lagging approximations can.
    """

    def __init__(self, reasoned: int, seconds_per_receive: float = 0.0, counts_lag: bool = False) -> None:
        super().__init__(reasoned, seconds_per_receive)
        self.counts_lag = counts_lag
        self.deleted: list[str] = []

    def add_person_letter(self, message_id: str, first: bool) -> None:
        """A letter SQS's redrive moved as it was (a clear body) holding ERASED_USER's user id."""
        letter = {
            "MessageId": message_id,
            "ReceiptHandle": f"h-{message_id}",
            "Body": f'{{"user_id": "{ERASED_USER}"}}',
        }
        self.letters.insert(0 if first else len(self.letters), letter)
        self.visible_at[message_id] = 0.0

    def change_message_visibility_batch(self, Entries: list[dict[str, Any]], **_: Any) -> None:
        """Held for VisibilityTimeout from now (0: released)."""
        for entry in Entries:
            self.visible_at[entry["ReceiptHandle"].removeprefix("h-")] = self.now + entry["VisibilityTimeout"]

    def delete_message(self, **call: Any) -> None:
        message_id = call["ReceiptHandle"].removeprefix("h-")
        self.letters = [m for m in self.letters if m["MessageId"] != message_id]
        self.deleted.append(message_id)

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        visible = sum(1 for m in self.letters if self.visible_at[m["MessageId"]] <= self.now)
        if self.counts_lag:
            visible = 0
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(visible),
                "ApproximateNumberOfMessagesNotVisible": "0" if self.counts_lag else str(len(self.letters) - visible),
                "ApproximateNumberOfMessagesDelayed": "0",
            }
        }


def sweep_over(client: SweptDlq) -> DeadLetterSweep:
    return DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]


def erase(client: SweptDlq, monkeypatch: pytest.MonkeyPatch) -> int:
    """`dead-letters erase - --yes --wait 0` for ERASED_USER over `client`, as main runs it."""
    monkeypatch.setattr("sys.stdin", io.StringIO(f"user_id={ERASED_USER}\n"))
    args = argparse.Namespace(stdin=["-"], yes=True, wait=0.0)
    dlq = sweep_over(client)
    try:
        return dead_letter_erasure.run_erase(args, dlq, "tokenvault-dead-letters", lambda _: "")
    finally:
        dlq.release()


def test_list_says_when_it_read_its_limit_of_letters_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    client = SweptDlq(reasoned=LISTING_LIMIT)  # 10,000 with a reason, then one without: one more than a listing reads
    assert dead_letters._run(argparse.Namespace(command="list"), sweep_over(client), None) == 3
    out, err = capsys.readouterr()
    assert f"{LISTING_LIMIT} dead letter(s)" in out and "redriven-last" not in out
    assert "cut short" in err and f"limit of {LISTING_LIMIT} letters" in err and "may not be the whole DLQ" in err
    assert "Nothing was changed" in err and "Run it again" in err


def test_list_says_when_its_listing_outlasted_its_lease_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    client = SweptDlq(reasoned=5, seconds_per_receive=45.0)  # a slow SQS: every letter listed, past the lease
    assert dead_letters._run(argparse.Namespace(command="list"), sweep_over(client), None) == 3
    out, err = capsys.readouterr()
    assert "6 dead letter(s)" in out and "longer than its 60 s lease" in err and "may not be the whole DLQ" in err


def test_erase_lists_on_past_a_cut_short_listing_though_the_counts_say_nothing_is_left(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = SweptDlq(reasoned=LISTING_LIMIT, counts_lag=True)
    client.add_person_letter("person-last", first=False)  # past the first listing's 10,000
    assert erase(client, monkeypatch) == 0
    out, err = capsys.readouterr()
    assert client.deleted == ["person-last"]  # it exited 0 with the person's letter never examined
    assert "holding the person's values, deleted: 1" in out and "cut short" not in err
    assert ERASED_USER not in out + err


def test_erase_whose_last_listing_was_cut_short_says_some_letters_were_not_examined_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dead_letter_erasure_sweep, "MAX_ROUNDS", 2)
    client = SweptDlq(reasoned=300, seconds_per_receive=6.0)  # 90 letters a listing before its lease runs low
    client.add_person_letter("person-first", first=True)
    client.add_person_letter("person-last", first=False)
    assert erase(client, monkeypatch) == 3
    out, err = capsys.readouterr()
    assert client.deleted == ["person-first"]
    assert "dead letters checked: 180" in out and "holding the person's values, deleted: 1" in out  # what it did
    assert "cut short" in err and "lease was running out" in err and "may not have been examined" in err
    assert "Run `dead-letters erase` again" in err and ERASED_USER not in out + err


def test_show_of_a_letter_not_listed_says_the_listing_was_cut_short_rather_than_no_such_letter() -> None:
    client = SweptDlq(reasoned=LISTING_LIMIT)
    args = argparse.Namespace(command="show", message_id="redriven-last")  # the one letter past the limit
    with pytest.raises(DeadLetterError) as refused:
        dead_letters._run(args, sweep_over(client), None)
    assert "no dead letter" not in str(refused.value)  # it said there was none
    assert "not among the 10000 listed" in str(refused.value) and "cut short" in str(refused.value)
