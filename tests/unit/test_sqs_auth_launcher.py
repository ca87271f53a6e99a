"""The SQS emulator launcher's bounds on connections (attack 21, F3), on stand-ins for hypercorn's parts;
tests/integration/test_sqs_authentication.py starts the launcher on the pinned hypercorn."""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devstack.sqs_auth_launcher import (
    BODY_SECONDS,
    LONGEST_LONG_POLL_SECONDS,
    READ_SECONDS,
    LauncherError,
    OutOfFilesOncePerMinute,
    body_seconds,
    cap_connections,
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
