"""walk48, W48-13: `make run` says what it waits for while a stopped ETL's messages are in flight.

`kill <etl>`, then `make run --events 300`: "messages read : 300 of 300 sent (60.7 s)" with nothing printed for that
minute - the dead ETL had received some of the messages (its long polls were still open at the queue), and they
stayed invisible until their lease ended. Now, when no event lands for a few seconds while messages are in flight,
it says once what it waits for and for how long at most: the lease the stack's ETL was started with. The stack as
`devstack up --etl-visibility-timeout-seconds 12` starts it (real SQS endpoint, ETL, vault, OpenBao, Postgres): the
test waits out a lease of 12 s, not the default 60 s (it took 63 s of CI); the stopped ETL's receive is the ETL's
own key receiving and never deleting.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import demo
from devstack.envfile import read_env_file
from devstack.events import OutgoingEvent, send_events
from devstack.procs import stop_pid
from devstack.restart import restart_dead
from devstack.sqs import identity_key, sqs_client
from devstack.stack import StackState
from tests.e2e.test_embedded_stack import run
from tests.malformed_samples import body

pytestmark = pytest.mark.e2e

EVENTS = 50
"""More than the dead ETL's open long polls can take (ETL_RECEIVERS 4, 10 each): some are left to receive here."""
LEASE = 12
"""The stack's ETL's lease: longer than the ETL's restart (~1 s) and demo.STALL_SECONDS (5 s), after which `make run`
says what it waits for, so it says so before the leases end."""


@pytest.fixture(scope="module")
def stack_dir() -> Iterator[Path]:
    state_dir = Path(tempfile.mkdtemp(prefix="tokenvault-w4813-"))
    state_dir.chmod(0o755)
    started = run("-m", "devstack", "up", "--etl-visibility-timeout-seconds", str(LEASE), state_dir=state_dir)
    assert started.returncode == 0, started.stderr
    yield state_dir
    run("-m", "devstack", "down", state_dir=state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)


def test_w48_13_make_run_says_it_waits_for_messages_a_stopped_etl_received(
    stack_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = read_env_file(stack_dir / "stack.env")
    lease = demo.etl_lease_seconds(env)  # what `make run` reads of the stack it uses
    assert lease == LEASE, env.get("STACK_ETL_VISIBILITY_TIMEOUT_SECONDS")
    stop_pid(StackState.load(stack_dir / "state.json").pids["etl_service"])  # `kill <etl>`
    tag = uuid.uuid4().hex[:8]
    events = [
        OutgoingEvent(
            f"w4813-{tag}-{n}", body(user_id=f"w4813-{n}", ip=f"198.18.7.{n + 1}", device_id=f"999-98-{n:04d}")
        )
        for n in range(EVENTS)
    ]
    send_events(sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")), env["SQS_QUEUE_URL"], events)
    etl = sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "etl"))
    held = etl.receive_message(  # what the ETL had received when it stopped: never deleted
        QueueUrl=env["SQS_QUEUE_URL"],
        MaxNumberOfMessages=10,
        VisibilityTimeout=lease,
        WaitTimeSeconds=5,
    ).get("Messages", [])
    assert held, "no message received for the stopped ETL"
    capsys.readouterr()
    received = time.monotonic()
    assert restart_dead(stack_dir) == ["etl_service"]  # what `make run` does first (use_stack)
    started = time.monotonic()
    ids = [e.event_id for e in events]
    landed = demo.wait_for_landing(
        env["PG_ADMIN_DSN"], ids, 180, demo.etl_watch(stack_dir), demo.in_flight_counter(env), lease
    )
    waited = time.monotonic() - started
    printed = " ".join(capsys.readouterr().out.split())
    print(f"\nW48-13: {len(held)} held, restart {started - received:.1f} s, all {sum(landed)} landed in {waited:.1f} s")
    print(f"W48-13 said: {printed}")
    assert sum(landed) == EVENTS, printed
    assert printed.count("waiting for ") == 1, printed
    assert " message(s) in flight: received by an ETL and not loaded - most likely one that stopped" in printed
    assert f"their lease ends (within {LEASE} s)" in printed, printed  # the stack's lease, not the default 60 s
    # At most what it said: every lease began before the restart (the receive above, the dead ETL's long polls, which
    # took the lease the stack's ETL was started with - a default 60 s lease there would hold them a minute).
    assert waited < LEASE + 10, printed
