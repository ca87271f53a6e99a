"""Group commit: callers share writes, each returns once its own item is written."""

from __future__ import annotations

import threading
import time

import pytest

from vault_service.adapters.group_commit import GroupCommitter


class RecordingWriter:
    """Records every group it writes; the first write can be held until released."""

    def __init__(self, hold_first: bool = False, fail_group: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.threads: list[str] = []
        self.release = threading.Event()
        self.holding = threading.Event()
        self._hold_first = hold_first
        self._fail_group = fail_group
        self._active = 0

    def __call__(self, items: list[int]) -> None:
        self._active += 1
        assert self._active == 1, "two writes ran at once"
        try:
            self.threads.append(threading.current_thread().name)
            if self._hold_first and not self.groups:
                self.holding.set()
                self.release.wait(5)
            if self._fail_group is not None and len(self.groups) == self._fail_group:
                self.groups.append(items)
                raise OSError("disk full")
            time.sleep(0.001)
            self.groups.append(items)
        finally:
            self._active -= 1


def start_callers(committer: GroupCommitter[int], items: list[int]) -> tuple[list[threading.Thread], dict[int, object]]:
    """One thread per item calling submit; outcome per item: None when written, or the error."""
    outcomes: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            committer.submit(item)
            outcomes[item] = None
        except Exception as error:
            outcomes[item] = error

    threads = [threading.Thread(target=call, args=(item,), name=f"caller-{item}") for item in items]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_a_lone_caller_writes_its_item_in_its_own_thread() -> None:
    writer = RecordingWriter()
    committer = GroupCommitter(writer, max_group=10)
    committer.submit(1)
    committer.submit(2)
    assert writer.groups == [[1], [2]]
    assert writer.threads == [threading.current_thread().name] * 2


def test_callers_arriving_during_a_write_go_together_in_the_next_one() -> None:
    writer = RecordingWriter(hold_first=True)
    committer = GroupCommitter(writer, max_group=10)
    first, first_outcome = start_callers(committer, [0])
    assert writer.holding.wait(5)
    waiting, outcomes = start_callers(committer, [1, 2, 3, 4, 5])
    time.sleep(0.2)  # all five are queued behind the held write
    assert all(t.is_alive() for t in waiting), "a caller returned before its item was written"
    writer.release.set()
    for thread in first + waiting:
        thread.join(5)
    assert first_outcome == {0: None}
    assert outcomes == dict.fromkeys([1, 2, 3, 4, 5])
    assert writer.groups[0] == [0]
    assert sorted(writer.groups[1]) == [1, 2, 3, 4, 5]
    assert len(writer.groups) == 2


def test_groups_never_exceed_the_maximum_and_nothing_is_lost() -> None:
    writer = RecordingWriter(hold_first=True)
    committer = GroupCommitter(writer, max_group=3)
    first, _ = start_callers(committer, [0])
    assert writer.holding.wait(5)
    waiting, outcomes = start_callers(committer, list(range(1, 11)))
    time.sleep(0.2)
    writer.release.set()
    for thread in first + waiting:
        thread.join(5)
    assert all(len(group) <= 3 for group in writer.groups)
    assert sorted(item for group in writer.groups for item in group) == list(range(11))
    assert outcomes == dict.fromkeys(range(1, 11))


def test_a_failed_write_fails_every_caller_of_its_group_and_the_next_group_still_writes() -> None:
    writer = RecordingWriter(hold_first=True, fail_group=1)
    committer = GroupCommitter(writer, max_group=10)
    first, _ = start_callers(committer, [0])
    assert writer.holding.wait(5)
    failing, outcomes = start_callers(committer, [1, 2, 3])
    time.sleep(0.2)
    writer.release.set()
    for thread in first + failing:
        thread.join(5)
    assert set(outcomes) == {1, 2, 3}
    assert all(isinstance(error, OSError) and "disk full" in str(error) for error in outcomes.values())
    committer.submit(4)
    assert writer.groups[-1] == [4]


def test_the_error_reaches_a_lone_caller_and_the_committer_recovers() -> None:
    calls: list[list[int]] = []

    def write(items: list[int]) -> None:
        calls.append(items)
        if len(calls) == 1:
            raise OSError("connection lost")

    committer = GroupCommitter(write, max_group=10)
    with pytest.raises(OSError, match="connection lost"):
        committer.submit(1)
    committer.submit(2)
    assert calls == [[1], [2]]


def test_many_concurrent_callers_all_return_with_their_item_written() -> None:
    written: set[int] = set()
    lock = threading.Lock()

    def write(items: list[int]) -> None:
        time.sleep(0.0005)
        with lock:
            written.update(items)

    committer = GroupCommitter(write, max_group=50)
    seen_written_on_return: list[bool] = []

    def call(base: int) -> None:
        for n in range(50):
            item = base * 1000 + n
            committer.submit(item)
            with lock:
                seen_written_on_return.append(item in written)

    threads = [threading.Thread(target=call, args=(b,)) for b in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(written) == 400
    assert seen_written_on_return == [True] * 400
