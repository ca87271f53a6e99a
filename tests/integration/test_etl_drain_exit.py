"""`python -m etl_service drain` exits 3 when an error kept messages from loading, and loses none.

Real processes on real SQS, vault service and Postgres: a processing failure (a Postgres
trigger refusing one event's row: neither a bad message nor a misconfiguration) and a vault
that goes down during the drain. Either way the exit status says so, and every message is
loaded, still in the queue, or in the DLQ with a sealed body that an operator re-sends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import psycopg

from devstack.events import send_events
from devstack.procs import stop_pid
from devstack.sqs import sqs_client
from etl_service.entrypoints.cli import EXIT_OK, EXIT_UNPROCESSED
from tests.conftest import RunningVault, etl_harness_env
from tests.integration.conftest import start_vault_process
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.integration.etl_landings import (
    assert_each_event_landed_once,
    events,
    queue_depth,
    where_each_event_landed,
)

REPO = Path(__file__).resolve().parents[2]


def drain(env: dict[str, str], stderr: IO[str] | int = subprocess.PIPE) -> subprocess.Popen[str]:
    """`python -m etl_service drain` as an operator runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "etl_service", "drain"],
        env={**os.environ, **env},
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


@contextmanager
def _killed_at_exit(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """`process`, killed if the test fails while it runs (a drain left behind holds the stack's ETL ports)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def drained(env: dict[str, str]) -> tuple[int, str, str]:
    """Run a drain to its end: (exit status, stdout, stderr)."""
    with _killed_at_exit(drain(env)) as process:
        out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@contextmanager
def row_refused_by_postgres(admin_dsn: str, event_id: str) -> Iterator[None]:
    """A trigger that makes Postgres fail the insert of one event's row (a processing failure)."""
    name = f"refuse_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'a row this test refuses'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON public.user_logins FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER {name} ON public.user_logins")
            conn.execute(f"DROP FUNCTION public.{name}()")


def test_a_drain_where_processing_failed_exits_3_and_the_sealed_message_is_resent_after_the_fix(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(30, malformed_rate=0)
    poison = sent[7]
    env = etl_harness_env(stack_env, vault.address, visibility_timeout=10, max_receive_count=2)
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), env["ETL_QUEUE_URL"], sent)
    with row_refused_by_postgres(stack_env["PG_ADMIN_DSN"], poison.event_id):
        status, out, err = drained(env)
    assert status == EXIT_UNPROCESSED, err[-2000:]
    assert "processing_failed: 1" in out and "quarantined as processing_failed: 1" in out
    assert "1 message(s) left unprocessed because of errors" in err
    rows, quarantined = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert sorted(rows) == sorted(e.event_id for e in sent if e is not poison) and quarantined == [poison.event_id]
    (dead,) = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "processing_failed"
    assert json.loads(dead["Body"])["sealed_body"].startswith("vault:v")  # kept, sealed: it can come back

    # After the fix (the trigger is gone), the operator re-sends the original; a drain loads it, exit 0. The
    # letter records the tokens the vault minted for it: resend drops that record only when told (attack 38, M7).
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    resent = run_dead_letters(env, "resend", dead["MessageId"], "--drop-minted-record", token=operator_token)
    assert resent.returncode == 0, resent.stderr
    status, out, err = drained(env)
    assert status == EXIT_OK, err[-2000:]
    rows, _ = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert sorted(rows) == sorted(e.event_id for e in sent)  # each once, the re-sent one included
    assert all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"]) == []


def test_a_drain_stopped_while_the_vault_is_down_exits_3_and_leaves_every_message_in_the_queue(
    stack_env: dict[str, str], vault_process: tuple[str, int], tmp_path: Path
) -> None:
    address, vault_pid = vault_process
    sent = events(600, malformed_rate=0)
    env = {**etl_harness_env(stack_env, address, visibility_timeout=30), "ETL_BATCH_SIZE": "20"}
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)
    log = tmp_path / "etl.log"
    with log.open("w") as stderr, _killed_at_exit(drain(env, stderr)) as process:
        deadline = time.monotonic() + 60
        while len(where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)[0]) < 40:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        stop_pid(vault_pid)  # the vault goes away mid-drain
        while '"batch postponed' not in log.read_text():
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        assert process.poll() is None  # a drain waits for a dependency to come back...
        process.send_signal(signal.SIGTERM)  # ...until the operator stops it
        process.communicate(timeout=60)
    assert process.returncode == EXIT_UNPROCESSED, log.read_text()[-2000:]
    assert "still in the queue" in log.read_text()
    # Said as one WARNING naming the error's class, the dependency and counts - never the error's text (W46-11).
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    postponed = [line for line in lines if line["message"].startswith("batch postponed")]
    assert postponed and all(line["message"] == "batch postponed" for line in postponed), postponed
    first = postponed[0]
    assert first["level"] == "WARNING" and first["dependency"] == "vault", first
    assert first["reason"] in ("DependencyDown", "TokenizeOutcomeUnknown") and 1 <= first["messages"] <= 20, first
    assert not any(json.loads(e.body)["ip"] in log.read_text() for e in sent)
    loaded = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)[0]
    assert 40 <= len(loaded) == len(set(loaded)) < len(sent)
    assert queue_depth(endpoint, env["ETL_QUEUE_URL"]) == len(sent) - len(loaded)  # the rest waits in the queue
    assert all_dead_letters(endpoint, env["ETL_DLQ_URL"]) == []

    # With a vault back, a new drain loads every event once and exits 0.
    new_address, new_pid = start_vault_process(stack_env, tmp_path / "vault-again.log")
    try:
        status, out, err = drained({**env, "ETL_VAULT_ADDRESS": new_address})
    finally:
        stop_pid(new_pid)
    assert status == EXIT_OK and "unprocessed (err) : 0" in out, err[-2000:]
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, endpoint, env["ETL_DLQ_URL"])
