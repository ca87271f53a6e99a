"""An SQS endpoint: ministack in its own virtual environment (it pins botocore).

Creates `login-queue` and its dead-letter queue under a redrive policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.isolation import python_command
from devstack.procs import StackError, free_port, port_open, spawn, wait_until
from etl_service.adapters.sqs import make_sqs_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REPO = Path(__file__).resolve().parent.parent
MINISTACK_VENV = REPO / ".venv-ministack"
REQUIREMENTS = Path(__file__).resolve().parent / "ministack-requirements.txt"
QUEUE_NAME = "login-queue"
MAX_RECEIVE_COUNT = 5  # poison messages move to the DLQ after this many receives
DEV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",  # the AWS CLI reads this one, not AWS_REGION
}


@dataclass(frozen=True)
class SqsEndpoint:
    """A running SQS endpoint and the stack's queues."""

    endpoint_url: str
    pid: int
    queue_url: str
    dlq_url: str


def ensure_ministack(venv: Path = MINISTACK_VENV) -> Path:
    """The ministack venv's python, creating the venv from the pinned requirements if needed."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} for ministack (pinned in {REQUIREMENTS.name}) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    except subprocess.CalledProcessError as error:
        raise StackError(f"installing ministack failed: {error}") from None
    return python


def sqs_client(endpoint_url: str) -> SQSClient:
    """The ETL's SQS client for the embedded endpoint, with the throwaway dev credentials."""
    return make_sqs_client(
        endpoint_url,
        DEV_CREDENTIALS["AWS_REGION"],
        DEV_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        DEV_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_queues(
    endpoint_url: str, visibility_timeout: int = 30, name: str = QUEUE_NAME, max_receive_count: int = MAX_RECEIVE_COUNT
) -> tuple[str, str]:
    """Create queue `name` and its DLQ `<name>-dlq` with a redrive policy; return (queue_url, dlq_url)."""
    client = sqs_client(endpoint_url)
    queue_url = client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)})[
        "QueueUrl"
    ]
    return queue_url, attach_dead_letter_queue(client, queue_url, max_receive_count)


def attach_dead_letter_queue(sqs: SQSClient, queue_url: str, max_receive_count: int = MAX_RECEIVE_COUNT) -> str:
    """Create `<queue>-dlq` if needed and point the queue's redrive policy at it; return the DLQ URL.

    Idempotent, so it also serves queues that exist already (such as the exercise's).
    """
    name = queue_url.rstrip("/").rsplit("/", 1)[1]
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"RedrivePolicy": redrive})
    return dlq_url


def start_sqs(
    log_file: Path,
    visibility_timeout: int = 30,
    user: str | None = None,
    home: Path | None = None,
    port: int | None = None,
) -> SqsEndpoint:
    """Start ministack (SQS only) on a free loopback port (or `port`, for a restart) and create the queues."""
    ensure_ministack()
    port = port or free_port()
    pid = spawn(
        python_command(user, MINISTACK_VENV, "hypercorn", "ministack.app:app", "--bind", f"127.0.0.1:{port}"),
        log_file,
        env={"GATEWAY_PORT": str(port), "SERVICES": "sqs", "LOG_LEVEL": "WARNING"},
        user=user,
        home=home,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: port_open(port), "ministack (SQS)", 60, pid, log_file)
    queue_url, dlq_url = create_queues(endpoint, visibility_timeout)
    return SqsEndpoint(endpoint, pid, queue_url, dlq_url)
