"""`dead-letters show` prints a producer's body so that it cannot drive the operator's terminal.

Anyone who may send to the source queue writes the bodies the DLQ keeps (attack 17, finding 6):
`show` printed them byte for byte, 8-bit controls (CSI clear screen, OSC 52 clipboard write)
and bidi overrides (an ip shown as another) included. Over a fake SQS client
(tests/unit/dlq_clients.py), with a body in clear (no OpenBao needed); synthetic TEST-NET values.
"""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from etl_service.adapters.dead_letter_queue import DeadLetterError
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints import dead_letters
from tests.malformed_samples import body
from tests.unit.dlq_clients import DLQ, SOURCE, LargeDlq

CSI_CLEAR, OSC_CLIPBOARD, STRING_END = "\x9b2J", "\x9d52;c;Y3VybA==", "\x9c"
RIGHT_TO_LEFT, POP = "\u202e", "\u202c"
HOSTILE = (
    f'{{"user_id": "u-17", "ip": "{RIGHT_TO_LEFT}7.311.0.302{POP}",\n'
    f' "note": "{CSI_CLEAR}{OSC_CLIPBOARD}{STRING_END}"}}'
)
UNPRINTABLE = (CSI_CLEAR[0], OSC_CLIPBOARD[0], STRING_END, RIGHT_TO_LEFT, POP)


def dlq_with(body: str, event_id: str = "evt-17") -> tuple[LargeDlq, DeadLetterSweep]:
    """A DLQ holding one original in clear (`hostile`) beside the fake client's own letters."""
    client = LargeDlq(reasoned=0)
    client.add_original("hostile", body, reason=None)
    client.letters[-1]["MessageAttributes"]["event_id"]["StringValue"] = event_id
    return client, DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]


def test_show_prints_controls_and_bidi_overrides_as_escapes_and_keeps_the_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, dlq = dlq_with(HOSTILE)
    assert dead_letters._run(argparse.Namespace(command="show", message_id="hostile"), dlq, None) == 0
    printed = capsys.readouterr()
    assert not any(c in printed.out for c in UNPRINTABLE), ascii(printed.out)  # printed as they were
    assert "\\u202e7.311.0.302\\u202c" in printed.out and "\\x9b2J\\x9d52;c;" in printed.out
    assert printed.out.count("\n") == 2  # the body's own line break, and print's
    assert "5 unprintable character(s) printed as escapes" in printed.err
    assert "--output FILE" in printed.err


def test_a_plain_body_is_printed_as_it_is_with_no_note(capsys: pytest.CaptureFixture[str]) -> None:
    plain = '{"user_id": "u-17",\n\t"ip": "203.0.113.17"}'
    _, dlq = dlq_with(plain)
    assert dead_letters._run(argparse.Namespace(command="show", message_id="hostile"), dlq, None) == 0
    printed = capsys.readouterr()
    assert printed.out == plain + "\n" and printed.err == ""


def test_show_output_writes_the_exact_body_to_a_new_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dlq = dlq_with(HOSTILE)
    target = tmp_path / "body.json"
    args = argparse.Namespace(command="show", message_id="hostile", output=target)
    assert dead_letters._run(args, dlq, None) == 0
    assert target.read_text(encoding="utf-8") == HOSTILE
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert "7.311" not in printed and str(target) in printed  # nothing of the body on the terminal


def test_show_output_never_replaces_a_file(tmp_path: Path) -> None:
    _, dlq = dlq_with(HOSTILE)
    target = tmp_path / "kept.txt"
    target.write_text("the operator's notes")
    with pytest.raises(DeadLetterError, match="exists: --output writes a new file only"):
        dead_letters._run(argparse.Namespace(command="show", message_id="hostile", output=target), dlq, None)
    assert target.read_text() == "the operator's notes"


def test_resend_names_the_event_id_without_its_controls(capsys: pytest.CaptureFixture[str]) -> None:
    valid = body(user_id="u-17", ip="203.0.113.17")
    client, dlq = dlq_with(valid, event_id=f"evt-{CSI_CLEAR}17")
    args = argparse.Namespace(command="resend", message_id="hostile", body_file=None)
    assert dead_letters._run(args, dlq, None) == 0
    assert client.sent == [valid]
    out = capsys.readouterr().out
    assert CSI_CLEAR[0] not in out and "evt-?2J17" in out
