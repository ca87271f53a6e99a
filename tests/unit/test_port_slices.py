"""Parallel test processes take their stacks' ports from slices of their own (review 35, R35-4)."""

from __future__ import annotations

import pytest

from devstack import procs


def test_without_a_slice_the_whole_range_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(procs.PORT_SLICE_VARIABLE, raising=False)
    assert procs._this_process_slice(range(10000, 32768)) == range(10000, 32768)


def test_the_slices_of_two_processes_share_no_port(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = range(10000, 32768)
    slices = []
    for index in (0, 1):
        monkeypatch.setenv(procs.PORT_SLICE_VARIABLE, f"{index}/2")
        slices.append(set(procs._this_process_slice(ports)))
    assert not slices[0] & slices[1]
    assert len(slices[0]) == len(slices[1]) == len(ports) // 2


def test_free_ports_come_from_this_process_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(procs.PORT_SLICE_VARIABLE, "1/2")
    mine = procs._this_process_slice(procs._ports_outside_ephemeral_range())
    assert all(procs.free_port() in mine for _ in range(20))


@pytest.mark.parametrize("value", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_a_malformed_slice_stops_the_stack_saying_what_is_expected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(procs.PORT_SLICE_VARIABLE, value)
    with pytest.raises(procs.StackError, match="expected i/n"):
        procs.free_port()
