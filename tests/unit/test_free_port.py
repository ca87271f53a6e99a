"""The stack's free ports stay free until their process binds them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from devstack import procs
from devstack.procs import EPHEMERAL_RANGE_FILE, free_port


def _ephemeral_range() -> range:
    low, high = (int(bound) for bound in EPHEMERAL_RANGE_FILE.read_text().split())
    return range(low, high + 1)


def _outgoing_connections(count: int) -> Iterator[int]:
    """Open `count` connections to a local listener; yield each one's source port while all stay open."""
    with ExitStack() as sockets:
        listener = sockets.enter_context(socket.create_server(("127.0.0.1", 0), backlog=count))
        for _ in range(count):
            client = sockets.enter_context(socket.create_connection(listener.getsockname()))
            sockets.enter_context(listener.accept()[0])
            yield client.getsockname()[1]


def test_a_free_port_is_never_one_an_outgoing_connection_can_take_as_its_source() -> None:
    ports = [free_port() for _ in range(100)]
    source_ports = set(_outgoing_connections(300))
    assert source_ports <= set(_ephemeral_range())  # where the kernel takes them from
    assert not set(ports) & set(_ephemeral_range())
    assert not set(ports) & source_ports


def test_one_process_is_never_handed_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as listener:
        assert listener.getsockname()[1] == port


@pytest.mark.parametrize("ephemeral_range", ["1024 65535", "10000 65535", "2000 65000"])
def test_a_range_leaving_too_few_ports_outside_it_still_gives_distinct_ports(
    ephemeral_range: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tuned = tmp_path / "ip_local_port_range"
    tuned.write_text(ephemeral_range)
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE_FILE", tuned)
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.create_server(("127.0.0.1", ports[-1])):
        pass
    assert caplog.text.count("ports outside the ephemeral range") == 1  # once, not at each of the 50 ports
