"""An SQS refusal of the AWS identity in use tells a person which identity and what to check (walk48, W48-1).

A drain started from the embedded stack's sourced `stack.env` ran with the DLQ operator's key and
stopped with "SQS receive refused: AccessDenied" alone: no identity, no action, no hint, though
AWS's own message named both.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from etl_service.adapters.sqs_common import QueueConfigurationError, queue_attributes, raise_for

HINT = (
    "check which AWS key is in use (AWS_ACCESS_KEY_ID, AWS_SHARED_CREDENTIALS_FILE or boto3's chain)"
    " and what its IAM policy allows (deploy/aws/*-sqs-policy.json)"
)
DENIED = (
    "User: arn:aws:iam::000000000000:user/tokenvault-dlq-operator is not authorized to perform:"
    " sqs:ReceiveMessage because no identity-based policy allows the sqs:ReceiveMessage action"
)


def client_error(code: str, message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "ReceiveMessage")


def test_access_denied_names_the_identity_the_action_and_what_to_check() -> None:
    with pytest.raises(QueueConfigurationError) as refused:
        raise_for(client_error("AccessDenied", DENIED), "receive")
    text = str(refused.value)
    assert text.startswith(
        "SQS receive refused: AccessDenied (User: arn:aws:iam::000000000000:user/tokenvault-dlq-operator"
    )
    assert "sqs:ReceiveMessage" in text and text.endswith(HINT)
    assert "AWS_ACCESS_KEY_ID" in text and "deploy/aws/" in text


@pytest.mark.parametrize("code", ["InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"])
def test_other_identity_refusals_give_the_hint_without_repeating_the_text(code: str) -> None:
    with pytest.raises(QueueConfigurationError) as refused:
        raise_for(client_error(code, "The Canonical String for this request should have been 'POST / ...'"), "receive")
    assert str(refused.value) == f"SQS receive refused: {code}: {HINT}"


def test_access_denied_text_is_cut_short_and_printable() -> None:
    with pytest.raises(QueueConfigurationError) as refused:
        raise_for(client_error("AccessDenied", "denied\x1b[31m\n" + "x" * 1000), "receive")
    text = str(refused.value)
    assert "\x1b" not in text and "\n" not in text and "denied?[31m?" in text
    assert "x" * 300 not in text and "x" * 280 in text


def test_a_missing_queue_is_said_as_before() -> None:
    with pytest.raises(QueueConfigurationError) as refused:
        raise_for(client_error("AWS.SimpleQueueService.NonExistentQueue", "no such queue"), "receive")
    assert str(refused.value) == "SQS receive refused: AWS.SimpleQueueService.NonExistentQueue"


class Refusing:
    """An SQS client whose GetQueueAttributes is refused AccessDenied."""

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        raise client_error("AccessDenied", DENIED.replace("ReceiveMessage", "GetQueueAttributes"))


def test_the_start_up_queue_check_says_it_too_and_names_the_setting() -> None:
    with pytest.raises(QueueConfigurationError) as refused:
        queue_attributes(Refusing(), "https://sqs.example/1/login-queue", "ETL_QUEUE_URL")  # type: ignore[arg-type]
    text = str(refused.value)
    assert text.startswith("SQS queue https://sqs.example/1/login-queue refused: AccessDenied (User: arn:")
    assert HINT in text and text.endswith("(ETL_QUEUE_URL)")
