"""`dead-letters show/resend` tell a body in clear by the body, as `list` does, not by a `reason` attribute.

SQS's redrive moves an original with every attribute its producer set, one named `reason`
included (attack 12, finding 2). Since then `list` marks such a letter CLEAR by its body, but
`show` and `resend` still took a letter with a reason for a sealed one: they said its body was
not kept, so the operator could neither read nor re-send it. Over a fake SQS client
(tests/unit/dlq_clients.py); synthetic TEST-NET values only. The real run over ministack:
tests/integration/test_dead_letters_producer_reason.py.
"""

from __future__ import annotations

import argparse

import pytest

from etl_service.adapters.dead_letter_queue import DeadLetterError
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints import dead_letters
from etl_service.service.sealing import NOT_KEPT_TOO_LARGE
from tests.malformed_samples import body
from tests.unit.dlq_clients import DLQ, SOURCE, LargeDlq

ORIGINAL = body(user_id="u-clear-17", ip="203.0.113.17")


def dlq_with_reasoned_original() -> tuple[LargeDlq, DeadLetterSweep]:
    """One dead letter of the ETL's (not kept), one original without a reason, one with its producer's `login`."""
    client = LargeDlq(reasoned=1)
    client.add_original("clear-reasoned", ORIGINAL, reason="login")
    return client, DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]


def test_list_marks_the_original_with_a_producer_reason_clear(capsys: pytest.CaptureFixture[str]) -> None:
    _, dlq = dlq_with_reasoned_original()
    assert dead_letters._run(argparse.Namespace(command="list"), dlq, None) == 0
    marks = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert marks == {"reasoned-0": "-", "redriven-last": "CLEAR", "clear-reasoned": "CLEAR"}, marks


def test_show_prints_a_clear_body_with_a_producer_reason_as_list_marks_it(capsys: pytest.CaptureFixture[str]) -> None:
    _, dlq = dlq_with_reasoned_original()
    args = argparse.Namespace(command="show", message_id="clear-reasoned")
    assert dead_letters._run(args, dlq, None) == 0  # it said "the body ... was not kept", exit 1
    assert capsys.readouterr().out == ORIGINAL + "\n"


def test_resend_sends_a_clear_body_with_a_producer_reason_back_as_it_is() -> None:
    client, dlq = dlq_with_reasoned_original()
    args = argparse.Namespace(command="resend", message_id="clear-reasoned", body_file=None)
    assert dead_letters._run(args, dlq, None) == 0
    assert client.sent == [ORIGINAL]
    assert "clear-reasoned" not in {m["MessageId"] for m in client.letters}  # deleted once re-sent


def test_a_letter_of_the_etls_with_its_body_not_kept_is_still_refused_as_not_kept() -> None:
    for command in ("show", "resend"):
        _, dlq = dlq_with_reasoned_original()
        args = argparse.Namespace(command=command, message_id="reasoned-0", body_file=None)
        with pytest.raises(DeadLetterError) as refused:
            dead_letters._run(args, dlq, None)
        assert f"was not kept ({NOT_KEPT_TOO_LARGE})" in str(refused.value)
