"""`make run`: a file it cannot use is named before the stack starts; an ETL that stopped ends the wait.

A missing file, one that is not JSON or not a JSON array ended `make run` with a Python
traceback, after the whole stack had been started for nothing (documentation walk, 4 December).
The stack is replaced by a stand-in that fails the test if started.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devstack import demo

UNUSABLE = {"missing": None, "not json": "[{'user_id': 1}", "not an array": '{"user_id": "u-1"}'}


@pytest.mark.parametrize("content", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_an_unusable_event_file_is_named_and_nothing_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    def no_stack(state_dir: Path) -> dict[str, str]:
        pytest.fail(f"the stack was started in {state_dir}")

    monkeypatch.setattr(demo, "up", no_stack)
    events = tmp_path / "my_events.json"
    if content is not None:
        events.write_text(content)
    assert demo.main(["--file", str(events)]) == 2
    printed = " ".join(capsys.readouterr().out.split())
    assert f"cannot read the events of {events}" in printed, printed
    assert "Traceback" not in printed
    if content is not None:  # walk 53, W53-3: "Expecting value: line 1 column 1 (char 0)" alone named no fix
        assert "it must hold a JSON array of events" in printed and "as examples/sample_data.json" in printed, printed


@pytest.mark.parametrize(
    "args",
    [
        ["--events", "-5"],
        ["--events", "0"],
        ["--malformed-rate", "2"],
        ["--timeout", "-1"],  # walk 53, W53-3: sent the events, then "not accounted for after -1 s"
        ["--timeout", "0"],
        ["--timeout", "nan"],
    ],
)
def test_no_events_a_share_over_one_or_no_time_to_wait_is_refused_and_nothing_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """`make run RUN_ARGS="--events -5"` started the stack, sent nothing and printed an empty summary (walk, 6 Dec)."""

    def no_stack(state_dir: Path) -> dict[str, str]:
        pytest.fail(f"the stack was started in {state_dir}")

    monkeypatch.setattr(demo, "up", no_stack)
    with pytest.raises(SystemExit) as exited:
        demo.main(args)
    assert exited.value.code == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


def test_an_event_file_holding_no_event_is_named_and_nothing_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_stack(state_dir: Path) -> dict[str, str]:
        pytest.fail(f"the stack was started in {state_dir}")

    monkeypatch.setattr(demo, "up", no_stack)
    empty = tmp_path / "none.json"
    empty.write_text("[]")
    assert demo.main(["--file", str(empty)]) == 2
    assert f"no events in {empty}" in " ".join(capsys.readouterr().out.split())


def test_one_event_sent_is_said_as_one_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """walk 53: `make run RUN_ARGS="--file one.json"` said "sent 1 messages"."""
    _stack_whose_etl_stopped(monkeypatch)
    monkeypatch.setenv("TOKENVAULT_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.chdir(tmp_path)  # a short name: the console wraps a long path mid-word
    Path("one.json").write_text('[{"user_id": "u-1"}]')
    demo.main(["--file", "one.json"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "sent 1 message from one.json to login-queue" in printed, printed


def test_the_wait_for_the_etl_ends_at_once_when_the_etl_has_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # `make run` waited its whole --timeout (600 s), printing nothing outside a terminal, for an ETL
    # that had stopped (documentation walk, 4 December).
    monkeypatch.setattr(demo, "_counts", lambda dsn, ids: (0, 0))
    started = time.monotonic()
    landed = demo.wait_for_landing("postgresql://unused", ["evt-1", "evt-2"], 600, etl_running=lambda: False)
    assert landed == (0, 0) and time.monotonic() - started < 5


def test_make_run_says_the_etl_stopped_and_how_to_bring_it_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _stack_whose_etl_stopped(monkeypatch)
    assert demo.main(["--events", "3", "--timeout", "600"]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "the ETL service stopped" in printed and "make up" in printed and "etl_service.log" in printed, printed
    # Walk 53, W53-7: none was read, yet it said "before loading the 3 other(s)".
    assert "before loading any of them" in printed and "other(s)" not in printed, printed


def _stack_whose_etl_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo.main` against no stack: events 'sent' to nowhere, none landed, the ETL seen stopped."""
    monkeypatch.setattr(demo, "_counts", lambda dsn, ids: (0, 0))
    monkeypatch.setattr(demo, "_table_rows", lambda dsn: 0)
    monkeypatch.setattr(
        demo, "up", lambda state_dir: {"PG_ADMIN_DSN": "x", "SQS_ENDPOINT_URL": "x", "SQS_QUEUE_URL": "x"}
    )
    monkeypatch.setattr(demo, "sqs_client", lambda endpoint, key: None)
    monkeypatch.setattr(demo, "send_events", lambda sqs, url, events: len(events))
    monkeypatch.setattr(demo, "etl_watch", lambda state_dir: lambda: False)


def test_a_stall_with_messages_in_flight_says_once_what_it_waits_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """walk48, W48-13: after an ETL died `make run` waited the 60 s lease of the messages it had received, silent."""
    monkeypatch.setattr(demo, "STALL_SECONDS", 0.5)
    polls: list[float] = []

    def counts(dsn: str, ids: list[str]) -> tuple[int, int]:
        polls.append(time.monotonic())
        return (3 if len(polls) > 8 else 1), 0  # one landed, then ~2.5 s of nothing, then the rest

    monkeypatch.setattr(demo, "_counts", counts)
    landed = demo.wait_for_landing("postgresql://unused", ["e-1", "e-2", "e-3"], 60, in_flight=lambda: 2)
    printed = " ".join(capsys.readouterr().out.split())
    assert landed == (3, 0)
    assert printed.count("waiting for") == 1, printed  # once, not at every poll
    assert "waiting for 2 message(s) in flight" in printed and "most likely one that stopped" in printed, printed
    assert "their lease ends (within 60 s)" in printed, printed  # the ETL's default lease, when none is given


def test_a_stall_with_nothing_in_flight_or_progress_says_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing in flight (the ETL slow, the messages still in the queue): no lease to wait for, nothing said."""
    monkeypatch.setattr(demo, "STALL_SECONDS", 0.5)
    polls: list[int] = []

    def counts(dsn: str, ids: list[str]) -> tuple[int, int]:
        polls.append(1)
        return (2 if len(polls) > 8 else 0), 0

    monkeypatch.setattr(demo, "_counts", counts)
    assert demo.wait_for_landing("postgresql://unused", ["e-1", "e-2"], 60, in_flight=lambda: 0) == (2, 0)
    assert "waiting for" not in capsys.readouterr().out


def test_the_stall_line_names_the_running_etl_waiting_for_a_dependency_too() -> None:
    """Review 50, R50-7: the running ETL holding its batch while the vault or the database is down leaves messages in
    flight too; the line sent the user to a stopped ETL and a 60 s end that never comes in that case."""
    said = demo.waiting_for_leases(3)
    assert "the running ETL holds them itself while the vault or the database is down" in said, said
    assert "logs/etl_service.log" in said and "`dependency unavailable`" in said, said


@pytest.mark.parametrize(("kept", "named"), [("12", 12), (None, 60)], ids=["kept 12", "none kept"])
def test_make_run_names_the_lease_the_stacks_etl_was_started_with(
    kept: str | None,
    named: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The stall line named 60 s, the ETL's default, whatever lease `devstack up --etl-visibility-timeout-seconds`
    started the stack's ETL with; it names the lease stack.env keeps, and 60 s for a stack that kept none."""
    monkeypatch.setenv("TOKENVAULT_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.setattr(demo, "STALL_SECONDS", 0.2)
    stack_env = {"PG_ADMIN_DSN": "x", "SQS_ENDPOINT_URL": "x", "SQS_QUEUE_URL": "x"}
    if kept is not None:
        stack_env["STACK_ETL_VISIBILITY_TIMEOUT_SECONDS"] = kept
    monkeypatch.setattr(demo, "up", lambda state_dir: stack_env)
    monkeypatch.setattr(demo, "sqs_client", lambda endpoint, key: None)
    monkeypatch.setattr(demo, "send_events", lambda sqs, url, events: len(events))
    monkeypatch.setattr(demo, "_counts", lambda dsn, ids: (0, 0))
    monkeypatch.setattr(demo, "_table_rows", lambda dsn: 0)
    asked: list[int] = []  # the ETL "stops" once the line is said: the demo ends without a database

    def in_flight() -> int:
        asked.append(3)
        return 3

    monkeypatch.setattr(demo, "in_flight_counter", lambda env: in_flight)
    monkeypatch.setattr(demo, "etl_watch", lambda state_dir: lambda: not asked)
    assert demo.main(["--events", "3", "--timeout", "60"]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert printed.count("waiting for 3 message(s) in flight") == 1, printed
    assert f"their lease ends (within {named} s)" in printed, printed


def test_a_lease_kept_that_the_etl_would_refuse_is_named_as_its_default() -> None:
    """Hand-edited to what the ETL refuses (it would not start with it): the default, not a traceback."""
    for kept in ("soon", "1", "43201"):
        assert demo.etl_lease_seconds({"STACK_ETL_VISIBILITY_TIMEOUT_SECONDS": kept}) == 60
