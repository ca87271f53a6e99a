"""The queue-pair check (sqs_common.check_queue_pair) of the ETL's start and of every `dead-letters` command.

On queue attributes as a table: what real SQS does not produce (a policy naming no target, no
QueueArn), and that the operator's commands refuse what the ETL does, reading attributes only.
tests/integration/test_etl_startup.py, test_etl_dead_letters.py and test_erasure_dead_letters.py
cover the misconfigurations a real endpoint shows (a DLQ that is the source, another queue's,
one redriving elsewhere, a source without a redrive policy).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from etl_service.adapters.dead_letter_queue import DeadLetterQueue
from etl_service.adapters.sqs import SqsQueue
from etl_service.adapters.sqs_common import QueueConfigurationError, QueuePairRefused

SOURCE, DLQ = "https://sqs.example/1/login-queue", "https://sqs.example/1/login-queue-dlq"
SOURCE_ARN, DLQ_ARN = "arn:aws:sqs:r:1:login-queue", "arn:aws:sqs:r:1:login-queue-dlq"
THIRD_ARN = "arn:aws:sqs:r:1:somewhere-else"
TO_DLQ = json.dumps({"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": "5"})


class AttributesOnly:
    """An SQS client that answers GetQueueAttributes from a table."""

    def __init__(self, attributes: dict[str, dict[str, str]]) -> None:
        self.attributes = attributes
        self.asked: list[str] = []

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        self.asked.append(QueueUrl)
        return {"Attributes": {k: v for k, v in self.attributes[QueueUrl].items() if k in AttributeNames}}


def check(source: dict[str, str], dlq: dict[str, str]) -> SqsQueue:
    queue = SqsQueue(AttributesOnly({SOURCE: source, DLQ: dlq}), SOURCE, DLQ)  # type: ignore[arg-type]
    queue.check()
    return queue


def test_a_source_without_a_redrive_policy_is_refused() -> None:
    # attack9 Break 6: nothing ties the two queues together, and a crash loop would never end.
    # The exercise's queue gets its redrive policy from `devstack.exercise_queue` first.
    with pytest.raises(QueuePairRefused, match=r"ETL_QUEUE_URL .*has no redrive policy") as refused:
        check({"QueueArn": SOURCE_ARN}, {"QueueArn": DLQ_ARN})
    assert SOURCE_ARN in str(refused.value) and DLQ_ARN in str(refused.value)


@pytest.mark.parametrize("target", [THIRD_ARN, SOURCE_ARN])
def test_a_dlq_with_a_redrive_policy_of_its_own_is_refused(target: str) -> None:
    # attack9 Break 6: each `list` is a receive; the letters would move on to `target`.
    own = json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": "2"})
    with pytest.raises(QueuePairRefused, match=r"ETL_DLQ_URL .* has a redrive policy of its own") as refused:
        check({"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ}, {"QueueArn": DLQ_ARN, "RedrivePolicy": own})
    assert target in str(refused.value) and DLQ_ARN in str(refused.value)


def test_a_dlq_redrive_policy_naming_no_target_is_refused_too() -> None:
    with pytest.raises(QueuePairRefused, match="redrive policy of the queue of ETL_DLQ_URL"):
        check({"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ}, {"QueueArn": DLQ_ARN, "RedrivePolicy": "{}"})


def test_the_operator_commands_refuse_what_the_etl_refuses_for_the_same_reason_reading_attributes_only() -> None:
    """DeadLetterQueue.check (every `dead-letters` command) refuses each pair the ETL does; it only reads attributes."""
    cases = {
        "has no redrive policy": ({"QueueArn": SOURCE_ARN}, {"QueueArn": DLQ_ARN}),
        "ETL_DLQ_URL names the source queue": (
            {"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ},
            {"QueueArn": SOURCE_ARN},
        ),
        "is not the dead-letter queue of ETL_QUEUE_URL": (
            {"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ.replace(DLQ_ARN, THIRD_ARN)},
            {"QueueArn": DLQ_ARN},
        ),
        "has a redrive policy of its own": (
            {"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ},
            {"QueueArn": DLQ_ARN, "RedrivePolicy": TO_DLQ},
        ),
    }
    for reason, (source, dlq) in cases.items():
        client = AttributesOnly({SOURCE: source, DLQ: dlq})
        with pytest.raises(QueuePairRefused, match=reason):
            SqsQueue(client, SOURCE, DLQ).check()  # type: ignore[arg-type]
        with pytest.raises(QueuePairRefused, match=reason):
            DeadLetterQueue(client, SOURCE, DLQ).check()  # type: ignore[arg-type]
        assert client.asked == [SOURCE, DLQ, SOURCE, DLQ]
    fine = AttributesOnly({SOURCE: {"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ}, DLQ: {"QueueArn": DLQ_ARN}})
    pair = DeadLetterQueue(fine, SOURCE, DLQ).check()  # type: ignore[arg-type]
    assert (pair.source_arn, pair.dlq_arn, pair.max_receive_count) == (SOURCE_ARN, DLQ_ARN, 5)


def test_a_source_redriving_to_the_dlq_passes_with_its_receive_limit() -> None:
    assert check({"QueueArn": SOURCE_ARN, "RedrivePolicy": TO_DLQ}, {"QueueArn": DLQ_ARN}).max_receive_count == 5


@pytest.mark.parametrize("redrive", ["not json", "{}", '{"deadLetterTargetArn": 7}', "[]"])
def test_a_redrive_policy_naming_no_target_is_refused(redrive: str) -> None:
    with pytest.raises(QueueConfigurationError, match="redrive policy of the queue of ETL_QUEUE_URL"):
        check({"QueueArn": SOURCE_ARN, "RedrivePolicy": redrive}, {"QueueArn": DLQ_ARN})


def test_a_queue_without_an_arn_is_refused_rather_than_compared() -> None:
    with pytest.raises(QueueConfigurationError, match="QueueArn of the queue of ETL_DLQ_URL"):
        check({"QueueArn": SOURCE_ARN}, {})


@pytest.mark.parametrize(("count", "expected"), [(5, 5), ("5", 5), ("five", None), (None, None), ([5], None)])
def test_the_receive_limit_is_read_from_the_policy_parsed_once_or_none(count: object, expected: int | None) -> None:
    policy = json.dumps({"deadLetterTargetArn": DLQ_ARN, **({"maxReceiveCount": count} if count is not None else {})})
    pair = check({"QueueArn": SOURCE_ARN, "RedrivePolicy": policy}, {"QueueArn": DLQ_ARN})
    assert pair.max_receive_count == expected
