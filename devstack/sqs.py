"""An SQS endpoint: ministack in its own virtual environment (it pins botocore).

Creates `login-queue` and its dead-letter queue under a redrive policy. Authenticated (the
embedded stack of `make up`), ministack runs through devstack/sqs_auth_launcher.py under a
random root key that only this set-up holds, and each identity gets an IAM user under its
shipped policy and a key of its own (devstack/sqs_identities.py). Unauthenticated (the test
session's components, which make queues of their own), any key is accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions

from devstack.isolation import python_command
from devstack.procs import StackError, free_port, port_open, spawn, stop_pid, wait_until
from devstack.sqs_identities import IDENTITIES, SqsKey, create_identities, root_key
from etl_service.adapters.sqs import make_sqs_client
from etl_service.service.sealing import SQS_MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REPO = Path(__file__).resolve().parent.parent
MINISTACK_VENV = REPO / ".venv-ministack"
REQUIREMENTS = Path(__file__).resolve().parent / "ministack-requirements.txt"
LAUNCHER = Path(__file__).resolve().parent / "sqs_auth_launcher.py"
QUEUE_NAME = "login-queue"
MAX_RECEIVE_COUNT = 5  # poison messages move to the DLQ after this many receives
MAX_MESSAGE_BYTES = str(SQS_MAX_MESSAGE_BYTES)
"""Both queues refuse a larger message (SQS's default is now 1 MiB): the ETL's sealed dead letters, its
claim bounds and the emulator's body budget are sized for 256 KiB, and a producer gets SQS's own error."""
DEV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",  # the AWS CLI reads this one, not AWS_REGION
}


@dataclass(frozen=True)
class SqsEndpoint:
    """A running SQS endpoint, the stack's queues and each identity's key."""

    endpoint_url: str
    pid: int
    queue_url: str
    dlq_url: str
    keys: dict[str, SqsKey]
    """Identity (sqs_identities.IDENTITIES) -> its key; the dev key for each when unauthenticated."""
    authenticated: bool = False


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


DEV_KEY = SqsKey(DEV_CREDENTIALS["AWS_ACCESS_KEY_ID"], DEV_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def sqs_client(endpoint_url: str, key: SqsKey = DEV_KEY) -> SQSClient:
    """An SQS client for the embedded endpoint with `key` (the throwaway dev key: unauthenticated endpoints only)."""
    return make_sqs_client(endpoint_url, DEV_CREDENTIALS["AWS_REGION"], key.access_key_id, key.secret_access_key)


def identity_key(env: dict[str, str], identity: str) -> SqsKey:
    """`identity`'s key from the stack's env file values (the dev key for stacks that predate them)."""
    prefix = f"SQS_{identity.upper().replace('-', '_')}"
    if f"{prefix}_ACCESS_KEY_ID" not in env:
        return DEV_KEY
    return SqsKey(env[f"{prefix}_ACCESS_KEY_ID"], env[f"{prefix}_SECRET_ACCESS_KEY"])


def identity_env(keys: dict[str, SqsKey]) -> dict[str, str]:
    """Each identity's key as env file values: SQS_<IDENTITY>_ACCESS_KEY_ID and _SECRET_ACCESS_KEY."""
    values: dict[str, str] = {}
    for identity, key in keys.items():
        prefix = f"SQS_{identity.upper().replace('-', '_')}"
        values |= {f"{prefix}_ACCESS_KEY_ID": key.access_key_id, f"{prefix}_SECRET_ACCESS_KEY": key.secret_access_key}
    return values


def create_queues(
    endpoint_url: str,
    visibility_timeout: int = 30,
    name: str = QUEUE_NAME,
    max_receive_count: int = MAX_RECEIVE_COUNT,
    key: SqsKey = DEV_KEY,
) -> tuple[str, str]:
    """Create queue `name` and its DLQ `<name>-dlq` with a redrive policy; return (queue_url, dlq_url)."""
    client = sqs_client(endpoint_url, key)
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
    sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MaximumMessageSize": MAX_MESSAGE_BYTES})  # also an old one
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    sqs.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"RedrivePolicy": redrive, "MaximumMessageSize": MAX_MESSAGE_BYTES}
    )
    return dlq_url


def start_sqs(
    log_file: Path,
    visibility_timeout: int = 30,
    user: str | None = None,
    home: Path | None = None,
    port: int | None = None,
    authenticated: bool = False,
) -> SqsEndpoint:
    """Start ministack (SQS) on a free loopback port (or `port`, for a restart); create the queues and identities.

    `authenticated`: through the launcher, with a fresh root key (in ministack's environment and
    this call's memory only: a restart makes new ones) and an IAM user per identity.
    """
    ensure_ministack()
    port = port or free_port()
    bind = f"127.0.0.1:{port}"
    root = root_key() if authenticated else DEV_KEY
    if authenticated:
        command = python_command(user, MINISTACK_VENV, LAUNCHER, "--bind", bind)
        env = {**root.env(), "LOG_LEVEL": "WARNING"}
    else:
        command = python_command(user, MINISTACK_VENV, "hypercorn", "ministack.app:app", "--bind", bind)
        env = {"GATEWAY_PORT": str(port), "SERVICES": "sqs", "LOG_LEVEL": "WARNING"}
    pid = spawn(command, log_file, env=env, user=user, home=home)
    try:  # the caller records the PID only on success: a set-up that fails stops what it started
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: port_open(port), "ministack (SQS)", 60, pid, log_file)
        queue_url, dlq_url = create_queues(endpoint, visibility_timeout, key=root)
        if not authenticated:
            return SqsEndpoint(endpoint, pid, queue_url, dlq_url, dict.fromkeys(IDENTITIES, DEV_KEY))
        refuse_unless_authenticated(endpoint, queue_url)
        return SqsEndpoint(endpoint, pid, queue_url, dlq_url, create_identities(endpoint, root), authenticated=True)
    except BaseException:
        stop_pid(pid)
        raise


def refuse_unless_authenticated(endpoint_url: str, queue_url: str) -> None:
    """StackError unless the endpoint refuses the dev key "test" (a ministack whose bypass came back)."""
    try:
        sqs_client(endpoint_url).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    except botocore.exceptions.ClientError:
        return
    raise StackError(f"the SQS endpoint {endpoint_url} accepted the key 'test': it is not authenticated")
