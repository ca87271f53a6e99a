"""The SQS emulator launcher's bounds on connections (attack 21, F3), on stand-ins for hypercorn's parts;
tests/integration/test_sqs_authentication.py starts the launcher on the pinned hypercorn."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devstack.sqs_auth_launcher import (
    BODY_SECONDS,
    LONGEST_LONG_POLL_SECONDS,
    READ_SECONDS,
    TRANSPORT_READ_BYTES,
    LauncherError,
    OutOfFilesOncePerMinute,
    body_seconds,
    cap_connections,
    read_in_small_pieces,
)
from etl_service.config import EtlConfig
from tests.unit.etl_builders import minimal_etl_env
from tokenvault_common.env import ConfigError


class Writer:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class TCPServer:
    """Stand-in for hypercorn's: serves its connection until `release` is set."""

    release = asyncio.Event()

    def __init__(self) -> None:
        self.writer = Writer()
        self.served = False

    async def run(self) -> None:
        self.served = True
        await self.release.wait()


async def worker_serve() -> None:
    await TCPServer()  # type: ignore[misc]  # as hypercorn's worker_serve calls it (checked by the launcher)


def test_connections_over_the_cap_are_closed_unserved_and_served_again_once_others_close() -> None:
    hypercorn_run: Any = SimpleNamespace(TCPServer=TCPServer, worker_serve=worker_serve)
    cap_connections(hypercorn_run, 2)

    async def scenario() -> list[tuple[bool, bool]]:
        TCPServer.release = asyncio.Event()
        servers = [hypercorn_run.TCPServer() for _ in range(4)]
        held = [asyncio.create_task(server.run()) for server in servers[:3]]
        await asyncio.sleep(0)
        TCPServer.release.set()
        await asyncio.gather(*held)
        await servers[3].run()  # the others closed: served
        return [(server.served, server.writer.closed) for server in servers]

    assert asyncio.run(scenario()) == [(True, False), (True, False), (False, True), (True, False)]


def test_a_hypercorn_that_serves_otherwise_is_refused() -> None:
    with pytest.raises(LauncherError, match="re-read"):
        cap_connections(SimpleNamespace(TCPServer=TCPServer, worker_serve=TCPServer.run), 2)


def test_running_out_of_fds_is_logged_once_a_minute_other_errors_always() -> None:
    only = OutOfFilesOncePerMinute()

    def record(error: OSError) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "accept", None, (OSError, error, None))

    out_of_fds = OSError(errno.EMFILE, "Too many open files")
    assert [only.filter(record(out_of_fds)) for _ in range(3)] == [True, False, False]
    assert only.filter(record(OSError(errno.ECONNRESET, "reset")))
    assert only.filter(logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "plain", None, sys.exc_info()))


def test_the_body_deadline_may_be_shortened_only() -> None:
    assert body_seconds({}, 10) == 10 and body_seconds({"SQS_BODY_SECONDS": "1.5"}, 10) == 1.5
    for value in ("0", "-1", "11", "inf", "nan", "x"):
        with pytest.raises(LauncherError):
            body_seconds({"SQS_BODY_SECONDS": value}, 10)


def test_a_connection_is_read_longer_than_the_longest_long_poll_the_etl_may_make(tmp_path: Path) -> None:
    # Review 21, R21-9: hypercorn's read timeout of 10 s under the ETL's 20 s long polls made the next call
    # on the connection hang until botocore's 30 s read timeout after every idle receive.
    env = minimal_etl_env(tmp_path, "http://127.0.0.1:9/000000000000/q")
    assert EtlConfig.from_env({**env, "ETL_WAIT_SECONDS": str(LONGEST_LONG_POLL_SECONDS)}).wait_seconds == 20
    with pytest.raises(ConfigError):
        EtlConfig.from_env({**env, "ETL_WAIT_SECONDS": str(LONGEST_LONG_POLL_SECONDS + 1)})
    assert READ_SECONDS >= LONGEST_LONG_POLL_SECONDS + 10 and BODY_SECONDS <= 10


def _largest_read(payload: bytes) -> int:
    """The largest piece a real asyncio server's protocol is handed while `payload` arrives on one socket."""
    sizes: list[int] = []

    class Recorder(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            sizes.append(len(data))

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Recorder, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as sender:
            sender.sendall(payload)  # small enough for loopback's socket buffers: the loop has not run yet
            while sum(sizes) < len(payload):
                await asyncio.sleep(0.01)
        server.close()

    asyncio.run(serve())
    return max(sizes)


def test_the_event_loop_reads_a_socket_16_kib_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Review 22, R22-1: at asyncio's 256 KiB a read, ~0.5 MiB of each keyless connection's body was in memory
    # before its headers were judged (900 connections: +415-530 MB; +170-189 MB with reads of 16 KiB).
    transport = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    monkeypatch.setattr(transport, "max_size", transport.max_size)  # restored after the test
    payload = b" " * (192 * 1024)  # under asyncio's 256 KiB read, over 16 KiB (review 22, R22-7: not 1 MiB)
    assert _largest_read(payload) > TRANSPORT_READ_BYTES  # asyncio's own reads
    read_in_small_pieces(asyncio.selector_events)
    assert _largest_read(payload) <= TRANSPORT_READ_BYTES
    with pytest.raises(LauncherError, match="max_size"):
        read_in_small_pieces(SimpleNamespace())
