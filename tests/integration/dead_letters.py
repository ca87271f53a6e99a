"""What the dead-letter tests share: the operator's `dead-letters` command, and reading the queues it works on."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devstack.sqs import sqs_client
from etl_service.entrypoints import cli

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REPO = Path(__file__).resolve().parents[2]


def run_dead_letters(
    env: dict[str, str], *args: str, stdin: str = "", token: str = "", unset: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """`python -m etl_service dead-letters ARGS` as the DLQ operator runs it, with `env` and VAULT_TOKEN=`token`.

    `unset`: settings removed from the environment (this process's or `env`'s), so the command
    uses its defaults, as an operator who never set them does.
    """
    settings = {**os.environ, **env, "VAULT_TOKEN": token}
    for name in unset:
        settings.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "etl_service", "dead-letters", *args],
        env=settings,
        input=stdin,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_dead_letters_here(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *args: str,
    stdin: str = "",
    token: str = "",
) -> subprocess.CompletedProcess[str]:
    """`run_dead_letters` in this process: `python -m etl_service`'s main with `env` set, `stdin` its standard input.

    For commands expected to stop early (a refused setting), where starting a Python process for each
    cost more than the command: the same main, exit code and output, without the ~1-2 s start. Its
    log records of WARNING and above join its standard error, as logging's last-resort handler
    writes them there in the command's own process (which configures no logging).
    """
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    handler.setLevel(logging.WARNING)
    capsys.readouterr()  # what came before is not this command's
    with monkeypatch.context() as patched:  # undone after the command: later ones see the test's own environment
        for name, value in {**env, "VAULT_TOKEN": token}.items():
            patched.setenv(name, value)
        patched.setattr("sys.stdin", io.StringIO(stdin))
        logging.getLogger().addHandler(handler)
        try:
            code = cli.main(["dead-letters", *args])
        finally:
            logging.getLogger().removeHandler(handler)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["dead-letters", *args], code, out, err + logged.getvalue())


def queue_arn(sqs: SQSClient, url: str) -> str:
    """The QueueArn of the queue at `url`."""
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def all_dead_letters(endpoint: str, dlq_url: str) -> list[dict[str, Any]]:
    """Every message of the DLQ with its attributes, made visible again for the next reader."""
    sqs = sqs_client(endpoint)
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
    ).get("Messages", []):
        found += [dict(m) for m in batch]
    for message in found:  # visible again, for the next reader
        sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return found


def dead_letter_reasons(endpoint: str, dlq_url: str) -> list[str | None]:
    """The reason of each DLQ message (None: one SQS's redrive policy moved there), each made visible again at once.

    etl_landings.dead_letters leaves what it read invisible for 60 s: a drain after it waited for those letters as
    held by another reader - 62 s of the 79 s of test_etl_database_tls_refusals' mid-run test (etltests51).
    """
    return [
        m.get("MessageAttributes", {}).get("reason", {}).get("StringValue") for m in all_dead_letters(endpoint, dlq_url)
    ]


def read_all(sqs: SQSClient, url: str) -> list[tuple[str, int, str]]:
    """(message id, receive count, body) of every message of `url`, made visible again: this read counts one."""
    found = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        found += batch
    for message in found:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return sorted((m["MessageId"], int(m["Attributes"]["ApproximateReceiveCount"]), m["Body"]) for m in found)


def send(sqs: Any, queue_url: str, event_id: str, text: str, reason: str | None = None) -> None:
    """As a producer sends it: an event id, and a `reason` of its own when given."""
    attributes = {"event_id": event_id} | ({"reason": reason} if reason else {})
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=text,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def redrive(sqs: Any, queue_url: str, dlq_url: str, endpoint: str, expected: int) -> list[dict[str, Any]]:
    """Receive without settling until SQS's redrive policy (2 receives) moved `expected` messages to the DLQ."""
    deadline = time.monotonic() + 30
    while len(moved := all_dead_letters(endpoint, dlq_url)) < expected:
        assert time.monotonic() < deadline, f"the redrive moved {len(moved)} of {expected}"
        sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1)
    return moved
