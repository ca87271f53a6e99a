"""A crashed vault service or ETL comes back by itself and the pipeline carries events again (walk49, W49-1).

`docker compose kill` is a stop by hand to Docker (no restart policy applies to it), so the crash here is what an
OOM kill does: SIGKILL to the container's main process, sent from the host (the test runs as root beside its own
engine). Both services have `restart: unless-stopped`: each is running and healthy again with a restart counted,
with no `up`, and ten new events are then accounted for by the ETL.

Runs on the session's stack after the other compose files (its name sorts last: it adds rows, which
test_compose_stack.py counts from a fresh stack); run alone, it starts the stack with a first `up --wait`.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.compose.conftest import Timer, figure
from tests.compose.services import counts, running_healthy, up
from tests.compose.stack import Compose, wait_for

pytestmark = pytest.mark.compose

QUEUE_URL = "http://localstack:4566/000000000000/login-queue"
CRASHED = ("vault-service", "etl-service")


def container_state(compose: Compose, service: str) -> tuple[int, int, str]:
    """(main process's host PID, restart count, health) of the service's container."""
    (container,) = compose.run("ps", "-a", "-q", service).stdout.split()  # exited too: a crash not restarted
    shown = compose.engine.docker(
        "inspect", "-f", "{{.State.Pid}} {{.RestartCount}} {{.State.Health.Status}}", container
    ).stdout.split()
    return int(shown[0]), int(shown[1]), shown[2]


def test_a_crashed_vault_service_and_etl_restart_by_themselves(compose: Compose) -> None:
    with compose.step(*CRASHED):
        if not running_healthy(compose):  # as the files before left it; run alone, a first `up`
            up(compose)
        before = {service: container_state(compose, service) for service in CRASHED}
        timer = Timer()
        for pid, _, _ in before.values():
            os.kill(pid, signal.SIGKILL)

        def back() -> bool:
            now = {service: container_state(compose, service) for service in CRASHED}
            return all(now[s][1] > before[s][1] and now[s][2] == "healthy" for s in CRASHED)

        wait_for(back, 120, "the killed vault service and ETL restarted and healthy, with no `up`")
        figure("vault service and ETL back healthy after SIGKILL (restart policy)", f"{timer.seconds:.0f} s")
        rows, quarantined = counts(compose)
        compose.run(
            "run", "--rm", "--no-deps", "load-sample", "python", "-m", "devstack.events",
            "--events", "10", "--seed", "4901", "--queue-url", QUEUE_URL,
        )  # fmt: skip
        wait_for(lambda: sum(counts(compose)) >= rows + quarantined + 10, 90, "10 new events accounted for")
