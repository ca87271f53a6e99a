"""A starting replica is not ready before it serves: the erase rows are read first (review 40, R40-3).

`python -m vault_service` starts its health listener, then reads every erase row of the audit log (~25-50 us each:
seconds to minutes on a large log), then starts serving. Its readiness answered SERVING all along, so Kubernetes
routed calls to a replica that served none and a rolling update counted it available. Measured before the fix:
300,000 erase rows, readiness and liveness SERVING from 1 s on, "serving" logged after 8 s.

Real PostgreSQL and OpenBao, the service as a process of its own, a database of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2

from devstack.stack import vault_service_env
from tests.integration.audit_attacks import own_database
from vault_service.entrypoints.health_probe import status_of
from vault_service.entrypoints.server import LIVENESS_SERVICE

__all__ = ["own_database"]

REFUSALS = 30_000
"""Erase rows of refused Erase calls (as an analyst's loop leaves them): a start-up read of ~1-1.5 s here."""


def _refused_erase_rows(env: dict[str, str], rows: int) -> None:
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:  # through the chain trigger
        owner.execute(
            "INSERT INTO vault.audit_log (client, action, purpose, token_types, item_count, outcome, client_serial,"
            " client_cert_sha256, revealed) SELECT 'analyst', 'erase', '', 'ip', 1, 'refused: PermissionDenied',"
            " '1001', '', NULL FROM generate_series(1, %s)",
            (rows,),
        )


def test_readiness_is_not_serving_until_the_erase_rows_are_read_and_the_server_serves(
    own_database: dict[str, str],
) -> None:
    env = own_database
    _refused_erase_rows(env, REFUSALS)
    sockets = Path(tempfile.mkdtemp())
    sockets.chmod(0o700)
    health = f"unix:{sockets}/health.sock"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "vault_service"],
        env={
            **vault_service_env(env),
            "TOKENVAULT_GRPC_ADDRESS": f"127.0.0.1:{port}",
            "TOKENVAULT_METRICS_PORT": "0",
            "TOKENVAULT_HEALTH_ADDRESS": health,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        },
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True)
    reader.start()
    answers: list[tuple[float, int, int]] = []  # (wall time, readiness, liveness) while it starts
    began = time.monotonic()
    try:
        while time.monotonic() - began < 40 and not any('"serving"' in line for line in list(output)):
            with contextlib.suppress(grpc.RpcError):  # the listener not up yet
                answers.append((time.time(), status_of(health, "", 1), status_of(health, LIVENESS_SERVICE, 1)))
            time.sleep(0.05)
        answers.append((time.time(), status_of(health, "", 1), status_of(health, LIVENESS_SERVICE, 1)))
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=10)
    lines = [json.loads(line) for line in output if line.startswith("{")]
    served = [datetime.fromisoformat(line["time"]).timestamp() for line in lines if line["message"] == "serving"]
    read = [line for line in lines if "erase row(s) from its start" in line["message"]]
    assert served and read, "".join(output)[-2000:]
    assert read[0]["erase_rows"] == REFUSALS
    # Answers before the read ended (its line is logged before the server starts; the log's time has milliseconds):
    # not the few ms between the server's start and the "serving" line, which a loaded machine may stretch.
    read_ended = datetime.fromisoformat(read[0]["time"]).timestamp()
    before = [a for a in answers if a[0] < read_ended - 0.02]
    assert before, f"the health listener never answered before the replica served ({len(answers)} answers)"
    ready_early = [a for a in before if a[1] == health_pb2.HealthCheckResponse.SERVING]
    assert not ready_early, (
        f"readiness SERVING {served[0] - ready_early[0][0]:.2f} s before the replica served, while it read"
        f" ({read[0]['seconds']} s reading {REFUSALS} erase rows)"
    )
    assert all(a[2] == health_pb2.HealthCheckResponse.SERVING for a in before), "liveness: the process is alive"
    assert answers[-1][1] == health_pb2.HealthCheckResponse.SERVING, "never ready once serving"
