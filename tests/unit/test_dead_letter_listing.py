"""A DLQ listing long-polls, so a drain's take-back does not end on a false empty answer (attack 10, finding 5b).

Real SQS answers a short poll (WaitTimeSeconds=0) from a sample of its servers: it can return
nothing while a few letters exist, and the take-back then returned 0 and the drain declared done
with a reasonless letter (a clear body) still in the DLQ. Ministack always answers from every
message, so the fake client below plays SQS's sampling: a short poll sees nothing.

A listing also says when it was cut short (attack 11, finding 2): its limit reached (10,000 letters
with a reason hid a reasonless one and the drain exited 0), or its 60 s lease near or past its end
(1,000 receives outlast it: letters came back and were listed twice). LargeDlq plays a DLQ that
large, with a small limit and a fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from etl_service.adapters import dead_letter_queue
from etl_service.adapters.dead_letter_queue import DeadLetterQueue
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints import dead_letters
from tests.unit.dlq_clients import DLQ, SOURCE, LargeDlq


class SampledServers:
    """An SQS client whose short polls miss the DLQ's one letter; a long poll finds it."""

    def __init__(self) -> None:
        self.dlq = [
            {
                "MessageId": "redriven-1",
                "ReceiptHandle": "h-1",
                "Body": '{"user_id": "u"}',  # moved by SQS's redrive as it was: no reason attribute
                "MessageAttributes": {"event_id": {"DataType": "String", "StringValue": "evt-1"}},
            }
        ]
        self.sent: list[str] = []
        self.waits: list[int] = []

    def receive_message(self, QueueUrl: str, WaitTimeSeconds: int, **_: Any) -> dict[str, Any]:
        assert QueueUrl == DLQ
        self.waits.append(WaitTimeSeconds)
        if WaitTimeSeconds == 0:  # a sample of the servers: not the one holding the letter
            return {}
        found, self.dlq = self.dlq, []
        return {"Messages": found}

    def send_message(self, QueueUrl: str, MessageBody: str, **_: Any) -> dict[str, Any]:
        self.sent.append(MessageBody)
        return {"MessageId": "new-1"}

    def delete_message(self, **_: Any) -> None:
        """The dead letter re-sent is deleted."""

    def change_message_visibility_batch(self, **_: Any) -> None:
        """The listing is released."""


def test_a_take_back_long_polls_and_finds_the_letter_a_short_poll_would_miss() -> None:
    client = SampledServers()
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven().taken  # type: ignore[arg-type]
    assert taken == 1 and client.sent == ['{"user_id": "u"}']
    assert client.waits and min(client.waits) >= 1  # the last, empty answer too: it ends the listing


def test_a_take_back_that_reaches_its_limit_says_it_did_not_read_the_dlq_whole() -> None:
    client = LargeDlq(reasoned=100)  # attack 11, finding 2: 10,000 with a reason, then one without
    dlq = DeadLetterQueue(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    taken, complete, *_ = dlq.take_back_redriven(limit=100)
    assert taken == 0 and not complete and "limit of 100" in (dlq.cut_short or "")


def test_a_take_back_below_its_limit_reads_the_dlq_whole_and_takes_the_reasonless_letter_back() -> None:
    client = LargeDlq(reasoned=98)  # 99 letters: fewer than the limit (exactly 100 could be all or not)
    dlq = DeadLetterQueue(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dlq.take_back_redriven(limit=100) == (1, True, 0, 0) and client.sent == ["{}"]


def test_a_listing_stops_before_its_lease_runs_out_and_lists_no_letter_twice() -> None:
    client = LargeDlq(reasoned=2000, seconds_per_receive=0.5)  # 200 receives: 100 s > the 60 s lease
    dlq = DeadLetterQueue(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    letters = dlq.list()
    ids = [d.message_id for d in letters]
    assert len(ids) == len(set(ids)) and dlq.cut_short and "lease" in dlq.cut_short
    assert client.now < dead_letter_queue.LISTING_LEASE_SECONDS
    dlq.release()
    assert dlq.take_back_redriven()[:2] == (0, False)


def test_a_listing_whose_receives_outlast_the_lease_says_so() -> None:
    client = LargeDlq(reasoned=5, seconds_per_receive=45.0)  # a slow SQS: the empty answer ends at 90 s
    dlq = DeadLetterQueue(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert len(dlq.list()) == 6 and dlq.cut_short and "longer than its 60 s lease" in dlq.cut_short


def test_the_redrive_command_says_when_its_listing_was_cut_short_and_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = LargeDlq(reasoned=5, seconds_per_receive=45.0)
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._redrive(sweep) == 3
    out, err = capsys.readouterr()
    assert out == "taken back: 1\n" and "not read whole" in err and "Nothing is lost" in err


def test_the_redrive_command_that_took_none_while_another_reader_held_a_letter_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TakeBack.held_elsewhere (attack 12, finding 6): `redrive` exited 0 with the held letter unread."""
    client = LargeDlq(reasoned=3)  # 3 of the ETL's letters, then an original without a reason...
    client.visible_at["redriven-last"] = 600.0  # ...that another reader (an operator's `list`, say) holds
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._redrive(sweep) == 3
    out, err = capsys.readouterr()
    assert out == "taken back: 0\n" and client.sent == []
    assert "1 dead letter(s) held by another reader" in err and "run it again later" in err, err
    assert "not read whole" not in err  # the listing itself read what it could see


def test_the_redrive_command_exits_0_once_no_reader_holds_a_letter(capsys: pytest.CaptureFixture[str]) -> None:
    client = LargeDlq(reasoned=3)
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._redrive(sweep, lambda inputs: ["vault:v1:tag"] * len(inputs)) == 0  # the operator's
    assert capsys.readouterr() == ("taken back: 1\n", "")
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._redrive(sweep) == 0  # took none, none held: its own listing is not another reader's
    assert capsys.readouterr() == ("taken back: 0\n", "")


def test_the_redrive_command_without_the_operator_s_token_says_what_it_took_back_loads_under_today_s_date(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = LargeDlq(reasoned=3)
    sweep = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._redrive(sweep) == 0  # no tagger: no token to vouch for the time SQS kept with
    out, err = capsys.readouterr()
    assert out == "taken back: 1\n" and "not vouched for" in err and "today's date" in err, err
