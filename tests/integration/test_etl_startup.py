"""Misconfiguration is loud: each one stops the ETL with exit 1 and a message naming it, and no message moves.

Real SQS (ministack), the real vault service and real PostgreSQL; the ETL runs as `python -m
etl_service drain`, as an operator would start it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from devstack.certs import create_authority, issue
from devstack.events import generate_events, send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from etl_service.errors import Misconfigured
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.test_etl_recovery import queue_depth

REPO = Path(__file__).resolve().parents[2]


def run_etl(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl_service", "drain"],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def certs_of(env: dict[str, str], client: str) -> dict[str, str]:
    certs = Path(env["STACK_DIR"]) / "certs"
    return {"ETL_TLS_CERT": str(certs / f"{client}.pem"), "ETL_TLS_KEY": str(certs / f"{client}-key.pem")}


def foreign_certificate(directory: Path) -> dict[str, str]:
    """An `etl-service` certificate signed by another CA."""
    pair = issue(create_authority(directory, "some other CA"), directory, "etl-service")
    return {"ETL_TLS_CERT": str(pair.cert), "ETL_TLS_KEY": str(pair.key)}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong database password", "the password of ETL_DATABASE_DSN was refused"),
        ("the analysts' database role", "lacks a privilege the ETL needs"),
        ("a closed vault port", "vault service does not answer at start"),
        ("a certificate of another CA", "the TLS handshake failed"),
        ("the analyst's certificate", "PERMISSION_DENIED"),
        ("a missing queue", "refused: "),
    ],
)
def test_each_misconfiguration_stops_the_start_with_exit_1_and_its_message(
    stack_env: dict[str, str], vault: RunningVault, tmp_path: Path, case: str, expected: str
) -> None:
    env = etl_harness_env(stack_env, vault.address)
    sent = list(generate_events(5, seed=time.time_ns() % 2**32, malformed_rate=0))
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), env["ETL_QUEUE_URL"], sent)
    changes = {
        "wrong database password": {
            "ETL_DATABASE_DSN": re.sub(r"(://[^:]+:)[^@]+@", r"\1wrong@", env["ETL_DATABASE_DSN"])
        },
        "the analysts' database role": {"ETL_DATABASE_DSN": stack_env["PG_ANALYST_DSN"]},
        "a closed vault port": {"ETL_VAULT_ADDRESS": f"127.0.0.1:{free_port()}"},
        "a certificate of another CA": foreign_certificate(tmp_path),
        "the analyst's certificate": certs_of(stack_env, "analyst"),
        "a missing queue": {"ETL_QUEUE_URL": env["ETL_QUEUE_URL"] + "-nope"},
    }[case]
    result = run_etl({**env, **changes})
    assert result.returncode == 1, result.stderr[-2000:]
    assert expected in result.stderr, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line JSON, gRPC's own included
    assert all(datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0) for line in lines)
    assert queue_depth(stack_env["SQS_ENDPOINT_URL"], env["ETL_QUEUE_URL"]) == len(sent)  # nothing received


def test_a_refused_identity_while_running_releases_every_message_and_stops(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Past the start-up checks (an identity refused later, e.g. a policy changed): nothing moves toward the DLQ."""
    env = {**etl_harness_env(stack_env, vault.address, visibility_timeout=30), **certs_of(stack_env, "analyst")}
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    sent = list(generate_events(50, seed=time.time_ns() % 2**32, malformed_rate=0))
    send_events(sqs, env["ETL_QUEUE_URL"], sent)
    with etl_consumer(env) as etl:
        started = time.monotonic()
        with pytest.raises(Misconfigured, match="PERMISSION_DENIED"):
            etl.wired.consumer.drain()
    assert time.monotonic() - started < 15
    attributes = sqs.get_queue_attributes(QueueUrl=env["ETL_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) == len(sent), "every message visible again at once"
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0
    assert queue_depth(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"]) == 0
