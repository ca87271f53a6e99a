"""`make run RUN_ARGS="--file F"`: a file it cannot use is named, exit 2, before the stack starts.

A missing file, one that is not JSON or not a JSON array ended `make run` with a Python
traceback, after the whole stack had been started for nothing (documentation walk, 4 December).
The stack is replaced by a stand-in that fails the test if started.
"""

from __future__ import annotations

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
