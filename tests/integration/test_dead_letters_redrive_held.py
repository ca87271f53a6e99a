"""`dead-letters redrive` says when another reader held dead letters it could not read, and exits 3.

A take-back that took none counts the DLQ's letters another reader holds, or delayed ones, while
its listing holds the rest (TakeBack.held_elsewhere, attack 12, finding 6); the drain waits for
them, but `redrive` ignored the count and exited 0 with an original SQS's redrive moved still in
the DLQ, unread, in clear. Real SQS (ministack); synthetic values only.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.sqs import sqs_client
from etl_service.service.sealing import NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.conftest import RunningVault, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import body

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def test_redrive_that_took_none_while_another_reader_held_an_original_exits_3_then_takes_it_back(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    dlq_url = env["ETL_DLQ_URL"]
    sqs.send_message(  # as SQS's redrive moves an original: in clear, no reason
        QueueUrl=dlq_url,
        MessageBody=body(user_id=f"held-{tag}"),
        MessageAttributes={"event_id": {"DataType": "String", "StringValue": f"{tag}-held"}},
    )
    [held] = sqs.receive_message(QueueUrl=dlq_url, VisibilityTimeout=300, WaitTimeSeconds=1)[
        "Messages"
    ]  # another reader
    sqs.send_message(  # a dead letter of the ETL's: it stays
        QueueUrl=dlq_url,
        MessageBody=dead_letter_body(None, NOT_KEPT_TOO_LARGE, None),
        MessageAttributes={
            "event_id": {"DataType": "String", "StringValue": f"{tag}-etl"},
            "reason": {"DataType": "String", "StringValue": "missing_field"},
        },
    )

    redriven = run_dead_letters(env, "redrive")
    assert redriven.returncode == 3, (redriven.stdout, redriven.stderr)  # it exited 0
    assert redriven.stdout == "taken back: 0\n"
    assert "1 dead letter(s) held by another reader" in redriven.stderr and "run it again later" in redriven.stderr
    assert f"held-{tag}" not in redriven.stdout + redriven.stderr

    sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0)
    redriven = run_dead_letters(env, "redrive")  # the other reader let go: run again later
    assert (redriven.returncode, redriven.stdout) == (0, "taken back: 1\n"), redriven.stderr
    left = all_dead_letters(endpoint, dlq_url)
    assert [m["MessageAttributes"]["event_id"]["StringValue"] for m in left] == [f"{tag}-etl"]


def test_redrive_that_took_some_back_while_another_reader_held_one_recounts_and_exits_3(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """A take-back that moved letters used to exit 0 without counting held ones ("run until it takes none back")."""
    tag = uuid.uuid4().hex[:8]
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    dlq_url = env["ETL_DLQ_URL"]
    for name in ("held", "free"):  # as SQS's redrive moves originals: in clear, no reason
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=body(user_id=f"{name}-{tag}"),
            MessageAttributes={"event_id": {"DataType": "String", "StringValue": f"{tag}-{name}"}},
        )
    held = hold_one(sqs, dlq_url, f"{tag}-held")  # another reader holds one; the other is free to take back

    redriven = run_dead_letters(env, "redrive")  # without the operator's token: it says so too
    assert redriven.returncode == 3, (redriven.stdout, redriven.stderr)  # it exited 0 with the held one unread
    assert redriven.stdout == "taken back: 1\n"
    assert "1 dead letter(s) held by another reader" in redriven.stderr and "run it again later" in redriven.stderr
    assert "not vouched for" in redriven.stderr
    assert tag not in redriven.stdout + redriven.stderr

    sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=held, VisibilityTimeout=0)
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    # Nothing held any more: it takes the last one back (its time vouched for with the token), exit 0.
    redriven = run_dead_letters(env, "redrive", token=operator_token)
    assert (redriven.returncode, redriven.stdout, redriven.stderr) == (0, "taken back: 1\n", "")
    assert all_dead_letters(endpoint, dlq_url) == []


def hold_one(sqs: SQSClient, dlq_url: str, event_id: str) -> str:
    """Receive the DLQ message whose event id is `event_id` for 300 s (another reader); release the rest."""
    found = []
    while batch := sqs.receive_message(
        QueueUrl=dlq_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        VisibilityTimeout=300,
        WaitTimeSeconds=1,
    ).get("Messages", []):
        found += batch
    [held] = [m for m in found if m["MessageAttributes"]["event_id"]["StringValue"] == event_id]
    for message in found:
        if message is not held:
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return held["ReceiptHandle"]
