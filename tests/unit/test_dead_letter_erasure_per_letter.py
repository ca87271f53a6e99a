"""`dead-letters erase`: no letter stops the sweep (attack 12, finding 3), and which body is "read".

A letter whose matching raised (an `event_id` of 5,000 digits made `int` refuse it) ended the
run with a traceback: exit 1, no counts, the letters after it never checked, every rerun the
same. A failing letter is now counted as could not be checked - apart from those OpenBao could
not open, whose wording is about OpenBao and the key - its message id printed, and the sweep
goes on (exit 3). A letter in clear with its producer's `reason` had its body read: it is not
counted as without a kept body. The real run over SQS: tests/integration/test_erasure_dead_letter_attributes.py.
Over a duck-typed DLQ here; synthetic TEST-NET values only.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.adapters.dead_letter_sweep import Unseen
from etl_service.domain.erasure_match import Person
from etl_service.entrypoints.dead_letter_erasure import INCOMPLETE, run_erase
from etl_service.service.sealing import NOT_KEPT_NO_KEY, dead_letter_body

IP = "203.0.113.71"
AS_A_NUMBER = str(int.from_bytes(bytes([203, 0, 113, 71])))  # the ip as one decimal number


def letter(message_id: str, raw_body: str, event_id: str | None, reason: str | None = "wrong_type") -> DeadLetter:
    return DeadLetter(
        message_id=message_id,
        receipt_handle=f"rh-{message_id}",
        reason=reason,
        detail="",
        event_id=event_id or message_id,
        sent_timestamp_ms=1764790000000,
        sealed_body=None,
        key=None,
        note=None,
        raw_body=raw_body,
        producer_event_id=event_id,
    )


@dataclass
class ListedOnce:
    """A DLQ whose every letter is listed by the first listing, and nothing is left unseen."""

    letters: list[DeadLetter]
    deleted: list[str] = field(default_factory=list)
    cut_short: str | None = None
    _listed: bool = False

    holding: int = 0

    def list(self, limit: int) -> list[DeadLetter]:
        listed, self._listed = ([] if self._listed else list(self.letters)), True
        return listed

    def hold(self, letters: Sequence[DeadLetter], seconds: int) -> None:
        pass

    def keep_held(self, seconds: int) -> None:
        pass

    def delete(self, dead: DeadLetter) -> None:
        self.deleted.append(dead.message_id)

    def unseen(self) -> Unseen:
        return Unseen(visible=0, held_elsewhere=0)


def erase(dlq: ListedOnce, monkeypatch: pytest.MonkeyPatch, criteria: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(criteria))
    args = argparse.Namespace(stdin=["-"], yes=True, wait=0.0)
    return run_erase(args, dlq, "tokenvault-dead-letters", lambda _: "", "")  # type: ignore[arg-type]


def test_a_letter_whose_matching_fails_is_counted_and_the_sweep_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    poison = letter("poison-id", '{"user_id": "other"}', "evt-poison", reason=None)
    theirs = letter("theirs-id", '{"ip": "' + IP + '"}', "evt-theirs", reason=None)
    matches = Person.matches_event_id

    def failing_on_the_poison(self: Person, event_id: str, **kwargs: bool) -> bool:
        if event_id == "evt-poison":
            raise ValueError("whatever a producer's attribute makes a reader raise")
        return matches(self, event_id, **kwargs)

    monkeypatch.setattr(Person, "matches_event_id", failing_on_the_poison)
    dlq = ListedOnce([poison, theirs])
    code = erase(dlq, monkeypatch, f"ip={IP}\n")
    out, err = capsys.readouterr()
    assert code == INCOMPLETE
    assert dlq.deleted == ["theirs-id"]
    assert "dead letters checked: 2" in out and "deleted: 1" in out, out
    assert "poison-id could not be checked (matching failed: ValueError)" in err, err
    assert "could not be checked: 1" in err and err.rstrip().endswith("poison-id"), err
    assert "could not be opened" not in err and "OpenBao" not in err and "key" not in err, err
    assert IP not in out + err


def test_a_whole_number_in_an_event_id_deletes_only_a_letter_with_no_body_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = f"order-{AS_A_NUMBER}"  # another person's order number, by coincidence the ip as a number
    bodiless = letter("bodiless-id", dead_letter_body(None, NOT_KEPT_NO_KEY, None), event_id)
    redriven = letter("redriven-id", '{"user_id": "other", "ip": "192.0.2.9"}', event_id, reason=None)
    dlq = ListedOnce([bodiless, redriven])
    code = erase(dlq, monkeypatch, f"ip={IP}\n")
    out, _ = capsys.readouterr()
    assert code == 0
    assert dlq.deleted == ["bodiless-id"], "the redriven letter's body was read and names nobody"
    assert "deleted: 1" in out and "left untouched: 1" in out, out


def test_a_letter_in_clear_with_a_producer_reason_is_not_counted_as_without_a_kept_body(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reasoned_original = letter("clear-id", '{"user_id": "other", "ip": "192.0.2.9"}', "evt-clear", reason="login")
    bodiless = letter("bodiless-id", dead_letter_body(None, NOT_KEPT_NO_KEY, None), "evt-bodiless")
    code = erase(ListedOnce([reasoned_original, bodiless]), monkeypatch, f"ip={IP}\n")
    out, _ = capsys.readouterr()
    assert code == 0
    assert "dead letters checked: 2" in out and "without a kept body" in out, out
    assert out.split("without a kept body")[1].split("\n")[0].endswith(": 1"), out  # the body-less one only
