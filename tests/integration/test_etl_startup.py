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
from typing import TYPE_CHECKING

import pytest

from devstack.certs import create_authority, issue
from devstack.events import OutgoingEvent, generate_events, send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from etl_service.errors import Misconfigured
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import queue_arn
from tests.integration.etl_landings import queue_depth

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

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


def _dlq_misconfiguration(case: str, sqs: SQSClient, stack_env: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """The settings (and queue attributes) of one way to give the ETL a DLQ that is not its source's."""
    if case == "the source queue":
        return {"ETL_DLQ_URL": env["ETL_QUEUE_URL"]}
    if case == "the source queue under another URL":  # the same queue: only the QueueArns tell
        changed = env["ETL_QUEUE_URL"].replace("127.0.0.1", "localhost")
        assert changed != env["ETL_QUEUE_URL"], "the endpoint is not 127.0.0.1: this case would be the one before"
        return {"ETL_DLQ_URL": changed}
    if case == "another queue's DLQ":  # a shared DLQ, or a typo of the same shape
        other = etl_harness_env(stack_env, "127.0.0.1:9")
        return {"ETL_DLQ_URL": other["ETL_DLQ_URL"]}
    if case == "a source without a redrive policy":  # nothing ties the DLQ to it (attack9 Break 6)
        sqs.set_queue_attributes(QueueUrl=env["ETL_QUEUE_URL"], Attributes={"RedrivePolicy": ""})
        return {}
    if case == "a DLQ redriving to a third queue":  # each read of a dead letter moves it on (attack9 Break 6)
        third = sqs.create_queue(QueueName=f"third-{time.time_ns()}")["QueueUrl"]
        target = queue_arn(sqs, third)
    else:
        assert case == "a DLQ redriving into the source"
        target = queue_arn(sqs, env["ETL_QUEUE_URL"])
    redrive = {"deadLetterTargetArn": target, "maxReceiveCount": "2"}
    sqs.set_queue_attributes(QueueUrl=env["ETL_DLQ_URL"], Attributes={"RedrivePolicy": json.dumps(redrive)})
    return {}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("the source queue", "ETL_DLQ_URL names the source queue of ETL_QUEUE_URL"),
        ("the source queue under another URL", "ETL_DLQ_URL names the source queue of ETL_QUEUE_URL"),
        ("another queue's DLQ", "is not the dead-letter queue of ETL_QUEUE_URL"),
        ("a DLQ redriving into the source", "moving its messages to the source queue of ETL_QUEUE_URL"),
        ("a DLQ redriving to a third queue", "has a redrive policy of its own moving its messages to arn:"),
        ("a source without a redrive policy", "has no redrive policy"),
    ],
)
def test_a_dlq_that_is_not_the_source_queues_own_stops_the_start_before_any_receive(
    stack_env: dict[str, str], vault: RunningVault, case: str, expected: str
) -> None:
    """attack8 Finding 6: ETL_DLQ_URL = ETL_QUEUE_URL passed, then each refused event looped until discarded.

    attack9 Break 6: a DLQ redriving to a third queue, and a source without a redrive policy, passed.
    """
    env = etl_harness_env(stack_env, vault.address)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    sent = list(generate_events(3, seed=time.time_ns() % 2**32, malformed_rate=0))
    sent.append(
        OutgoingEvent(f"refused-{time.time_ns()}", json.dumps({**json.loads(sent[0].body), "device_type": "toaster"}))
    )
    send_events(sqs, env["ETL_QUEUE_URL"], sent)
    changes = _dlq_misconfiguration(case, sqs, stack_env, env)
    result = run_etl({**env, **changes})
    assert result.returncode == 1, result.stderr[-2000:]
    assert expected in result.stderr, result.stderr[-2000:]
    assert "ETL_QUEUE_URL" in result.stderr and "ETL_DLQ_URL" in result.stderr
    for event in sent:  # names settings and queues, never an event's values
        assert json.loads(event.body)["ip"] not in result.stderr
    # Nothing was received: every message still in the source, each on its first receive now.
    received: list[MessageTypeDef] = []
    for _ in range(10):
        received += sqs.receive_message(
            QueueUrl=env["ETL_QUEUE_URL"],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if len(received) >= len(sent):
            break
    assert sorted(m["Body"] for m in received) == sorted(e.body for e in sent)
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in received} == {"1"}
    source_arn = queue_arn(sqs, env["ETL_QUEUE_URL"])
    for dlq_url in {env["ETL_DLQ_URL"], changes.get("ETL_DLQ_URL", env["ETL_DLQ_URL"])}:
        if queue_arn(sqs, dlq_url) != source_arn:  # nothing dead-lettered either
            assert queue_depth(stack_env["SQS_ENDPOINT_URL"], dlq_url) == 0
