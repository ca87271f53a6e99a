"""The SQS start-up check on queue attributes real SQS does not produce (tests/integration/test_etl_startup.py
covers the misconfigurations a real endpoint shows: a DLQ that is the source, another queue's, or redrives into it).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from etl_service.adapters.sqs import SqsQueue
from etl_service.adapters.sqs_common import QueueConfigurationError

SOURCE, DLQ = "https://sqs.example/1/login-queue", "https://sqs.example/1/login-queue-dlq"
SOURCE_ARN, DLQ_ARN = "arn:aws:sqs:r:1:login-queue", "arn:aws:sqs:r:1:login-queue-dlq"


class AttributesOnly:
    """An SQS client that answers GetQueueAttributes from a table."""

    def __init__(self, attributes: dict[str, dict[str, str]]) -> None:
        self.attributes = attributes

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {k: v for k, v in self.attributes[QueueUrl].items() if k in AttributeNames}}


def check(source: dict[str, str], dlq: dict[str, str]) -> SqsQueue:
    queue = SqsQueue(AttributesOnly({SOURCE: source, DLQ: dlq}), SOURCE, DLQ)  # type: ignore[arg-type]
    queue.check()
    return queue


def test_a_source_without_a_redrive_policy_passes_with_no_receive_limit() -> None:
    # The exercise's queue before `devstack.exercise_queue` attached its DLQ.
    assert check({"QueueArn": SOURCE_ARN}, {"QueueArn": DLQ_ARN}).max_receive_count is None


def test_a_source_redriving_to_the_dlq_passes_with_its_receive_limit() -> None:
    redrive = json.dumps({"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": "5"})
    assert check({"QueueArn": SOURCE_ARN, "RedrivePolicy": redrive}, {"QueueArn": DLQ_ARN}).max_receive_count == 5


@pytest.mark.parametrize("redrive", ["not json", "{}", '{"deadLetterTargetArn": 7}', "[]"])
def test_a_redrive_policy_naming_no_target_is_refused(redrive: str) -> None:
    with pytest.raises(QueueConfigurationError, match="redrive policy of the queue of ETL_QUEUE_URL"):
        check({"QueueArn": SOURCE_ARN, "RedrivePolicy": redrive}, {"QueueArn": DLQ_ARN})


def test_a_queue_without_an_arn_is_refused_rather_than_compared() -> None:
    with pytest.raises(QueueConfigurationError, match="QueueArn of the queue of ETL_DLQ_URL"):
        check({"QueueArn": SOURCE_ARN}, {})
