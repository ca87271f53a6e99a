"""`make up` keeps data: it restarts what died, refuses (naming it) what cannot come back, never deletes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from devstack.envfile import read_env_file
from devstack.events import events_from_file, send_events
from devstack.procs import alive
from devstack.restart import components
from devstack.sqs import identity_key, sqs_client
from tests.etl_log import started_line

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_data.json"

pytestmark = pytest.mark.e2e


def devstack(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENVAULT_STACK_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def rows(env: dict[str, str]) -> int:
    """Events settled: loaded rows plus quarantined ones (the sample holds one malformed event)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM etl_quarantine)"
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for_rows(env: dict[str, str], count: int, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while rows(env) < count:
        assert time.monotonic() < deadline, f"{rows(env)} rows, expected {count}"
        time.sleep(0.2)


def producer(env: dict[str, str]) -> SQSClient:
    return sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer"))


def pids(state_dir: Path) -> dict[str, int]:
    return {c.name: c.pid for c in components(state_dir) if c.pid is not None}


def test_up_restarts_what_died_keeping_the_data_and_refuses_when_openbao_died() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="tokenvault-restart-"))
    state_dir.chmod(0o755)
    try:
        assert devstack(state_dir, "up").returncode == 0
        env = read_env_file(state_dir / "stack.env")
        events = events_from_file(SAMPLE)
        send_events(producer(env), env["SQS_QUEUE_URL"], events[:40])
        wait_for_rows(env, 40)
        status = devstack(state_dir, "status")
        assert status.returncode == 0 and status.stdout.count("up  ") == 6, status.stdout  # lock_watchdog too

        before = pids(state_dir)
        os.kill(before["postgres"], signal.SIGTERM)  # a smart shutdown: it waits for the services' sessions
        deadline = time.monotonic() + 10
        while "STOPPING  postgres" not in (stopping := devstack(state_dir, "status")).stdout:
            assert time.monotonic() < deadline, stopping.stdout  # walk 53, W53-6: it said "up" and exit 0
            time.sleep(0.3)
        assert stopping.returncode == 3 and "degraded: postgres is shutting down" in stopping.stdout, stopping.stdout
        os.kill(before["etl_service"], signal.SIGKILL)
        os.kill(before["vault_service"], signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):  # the smart shutdown may have ended with their sessions
            os.kill(before["postgres"], signal.SIGQUIT)  # immediate shutdown, as a crash
        killed = time.monotonic()
        time.sleep(1.5)
        degraded = devstack(state_dir, "status")
        assert (
            degraded.returncode == 3 and "DEAD  postgres" in degraded.stdout and "DEAD  etl_service" in degraded.stdout
        )

        again = devstack(state_dir, "up")
        assert again.returncode == 0, again.stderr
        assert "restarted: postgres, vault_service, etl_service" in again.stdout
        assert rows(env) == 40  # nothing deleted
        # The killed ETL's long polls (20 s) stay open in ministack and would swallow new messages
        # for a 60 s lease; send once they have expired.
        time.sleep(max(0.0, killed + 21 - time.monotonic()))
        send_events(producer(env), env["SQS_QUEUE_URL"], events[40:60])
        wait_for_rows(env, 60)  # and the restarted services work
        assert devstack(state_dir, "status").returncode == 0

        os.kill(pids(state_dir)["openbao"], signal.SIGKILL)
        time.sleep(0.5)
        refused = devstack(state_dir, "up")
        assert refused.returncode == 1 and "openbao (pid" in refused.stderr and "make down" in refused.stderr
        assert (state_dir / "stack.env").exists() and rows(env) == 60  # refused, and still nothing deleted
    finally:
        if os.environ.get("KEEP_STACK"):
            print((state_dir / "logs" / "etl_service.log").read_text()[-3000:])
        devstack(state_dir, "down")
        shutil.rmtree(state_dir, ignore_errors=True)


def test_up_restarts_the_etl_with_a_ministack_that_died_and_events_load_again() -> None:
    # ministack comes back on its port before its queues are made again: an ETL polling in that
    # window was told the queue does not exist and stopped (exit 1, a misconfiguration), right
    # after `make up` said the stack was up; `make run` then waited its 600 s for it in silence
    # (documentation walk, 4 December). The ETL is now restarted with ministack.
    # Started with a take-back period of its own (`--etl-take-back-seconds`), the restarted ETL keeps it; asked
    # for another on the running stack, `up` says it is not applied.
    state_dir = Path(tempfile.mkdtemp(prefix="tokenvault-restart-sqs-"))
    state_dir.chmod(0o755)
    try:
        assert devstack(state_dir, "up", "--etl-take-back-seconds", "0").returncode == 0
        env = read_env_file(state_dir / "stack.env")
        assert started_line(Path(env["ETL_SERVICE_LOG"]))["take_back_seconds"] == 0
        before = pids(state_dir)
        os.kill(before["ministack"], signal.SIGKILL)
        time.sleep(0.5)
        again = devstack(state_dir, "up", "--etl-take-back-seconds", "7")
        assert again.returncode == 0, again.stderr
        assert "restarted: ministack, etl_service" in again.stdout, again.stdout
        assert "--etl-take-back-seconds 7 not applied" in again.stderr and "(0 s)" in again.stderr, again.stderr
        after = pids(state_dir)
        assert after["etl_service"] != before["etl_service"] and not alive(before["etl_service"])
        assert started_line(Path(env["ETL_SERVICE_LOG"]))["take_back_seconds"] == 0  # the new ETL's log
        env = read_env_file(state_dir / "stack.env")  # the new ministack's identities have new keys
        send_events(producer(env), env["SQS_QUEUE_URL"], events_from_file(SAMPLE)[:20])
        wait_for_rows(env, 20)
        time.sleep(3)  # an ETL that met the missing queue would have stopped by now
        status = devstack(state_dir, "status")
        assert status.returncode == 0, status.stdout
    finally:
        devstack(state_dir, "down")
        shutil.rmtree(state_dir, ignore_errors=True)
