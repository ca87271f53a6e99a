"""The `tokenvault` command against a running embedded stack (real OpenBao, SQS, Postgres, both services).

One stack for the session, started like `make up`, with 3000 generated events loaded by its ETL.
Its ETL never takes back what is in the DLQ (`--etl-take-back-seconds 0`): tests here plant dead
letters and read them back, and the take-back (every 300 s by default) moved a plant that was not
the ETL's own while its test ran (the run of 2323ce7). No test here is about the take-back; those
that are start an ETL of their own (tests/integration/test_etl_vault_quota.py, tests/unit/test_periodic_take_back.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from devstack.events import OutgoingEvent, generate_events, send_events
from devstack.sqs import identity_key, sqs_client
from devstack.stack import down, up

REPO = Path(__file__).resolve().parents[2]
TOKENVAULT = Path(sys.executable).parent / "tokenvault"
"""The console script `make install` puts beside the interpreter."""

EVENTS = 3000


@dataclass
class CliStack:
    """A running embedded stack and the events its ETL loaded."""

    state_dir: Path
    env: dict[str, str]
    events: list[OutgoingEvent]

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`tokenvault ARGS` (add `--stack` yourself, or use `as_`), with a wide terminal for tables."""
        return subprocess.run(
            [str(TOKENVAULT), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=cwd or REPO,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )

    def as_(self, role: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`tokenvault --stack DIR --as ROLE ARGS`."""
        return self.run("--stack", str(self.state_dir), "--as", role, *args, stdin=stdin)

    def analyst_query(self, sql: str) -> list[tuple[object, ...]]:
        """Rows of `sql` as the analysts' read-only role."""
        with psycopg.connect(self.env["PG_ANALYST_DSN"]) as conn:
            return conn.execute(sql.encode()).fetchall()


def _wait_until_loaded(dsn: str, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = ANY(%s)", (ids,)).fetchone()
        if row and row[0] >= len(ids):
            return
        time.sleep(0.3)
    raise AssertionError(f"the ETL did not load {len(ids)} events within {timeout:.0f} s")


@pytest.fixture(scope="session")
def cli_stack() -> Iterator[CliStack]:
    """The embedded stack with EVENTS well-formed events loaded into user_logins."""
    state_dir = Path(tempfile.mkdtemp(prefix="tokenvault-cli-"))
    state_dir.chmod(0o755)  # Postgres runs as an unprivileged user and must reach its data directory
    try:
        env = up(state_dir, etl_take_back_seconds=0)
        events = list(generate_events(EVENTS, seed=17, malformed_rate=0.0))
        send_events(sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")), env["SQS_QUEUE_URL"], events)
        _wait_until_loaded(env["PG_ADMIN_DSN"], [e.event_id for e in events], 180)
        yield CliStack(state_dir, env, events)
    finally:
        down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def loaded_rows_removed(cli_stack: CliStack) -> Iterator[None]:
    """The rows a test loaded through tests/cli/erase_logins.py (event ids `e3-RUN-...`) leave user_logins after it."""
    yield
    from tests.cli.erase_logins import remove_loaded_rows  # erase_logins imports CliStack from here

    remove_loaded_rows(cli_stack)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cli" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
