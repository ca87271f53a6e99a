"""The SQS emulator's request check (devstack/sqs_request_check.py) on requests made here; the launcher
runs it on ministack, tests/integration/test_sqs_authentication.py on the real emulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from devstack.sqs_request_check import (
    FORM_TYPES,
    JSON_TYPE,
    MAX_BODY_BYTES,
    misjudged,
    refuse_unclear_requests,
    signed_headers,
    unclear_request,
)

ROOT, IDENTITY = "ROOT0123456789ABCDEF", "AKIA0000000000000001"
QUEUE = "http://127.0.0.1:4566/000000000000/login-queue"
RECEIVE = {"x_amz_target": "AmazonSQS.ReceiveMessage", "content_type": JSON_TYPE}


def judged(body: dict[str, Any] | str, key: str = IDENTITY, service: str = "sqs", **fields: str) -> int | None:
    """The refusal's status for a POST / with `body`, or None when it is served."""
    text = body if isinstance(body, str) else json.dumps(body)
    refusal = unclear_request("POST", "/", b"", signed_headers(key, service, **fields), text.encode(), ROOT)
    return refusal.status if refusal else None


def test_boto3_s_requests_are_served_and_review_21_s_refused() -> None:
    assert misjudged(ROOT) is None


def test_a_queue_or_parameter_named_twice_or_a_queue_url_not_exactly_a_queue_s_is_refused() -> None:
    assert judged({"QueueUrl": QUEUE}, **RECEIVE) is None
    for body in (
        {"QueueUrl": QUEUE + "/"},
        {"QueueUrl": QUEUE + ";x=/login-queue-dlq"},
        {"QueueUrl": QUEUE.replace("000000000000/", "000000000000/x/")},
        {"QueueUrl": QUEUE, "QueueName": "login-queue-dlq"},
        {"QueueUrl": ["a", QUEUE]},
        f'{{"QueueUrl": "{QUEUE}", "QueueUrl": "{QUEUE}-dlq"}}',
        "[]",
    ):
        assert judged(body, **RECEIVE) == 400, body
    form = {"content_type": FORM_TYPES[1]}
    assert judged("Action=CreateUser&UserName=x", ROOT, "iam", **form) is None
    assert judged("Action=CreateUser&UserName=x&UserName=y", ROOT, "iam", **form) == 400
    assert judged('{"Action=CreateUser": 1}', ROOT, "iam", **form) == 400  # IAM reads a JSON body first
    assert judged(f"Action=ReceiveMessage&QueueUrl={QUEUE}", ROOT, "sqs", **form) == 403  # SQS's query protocol
    assert judged({"QueueUrl": QUEUE}, ROOT, "sqs", **RECEIVE) is None  # root's SQS calls pass the same check


def test_a_header_twice_is_refused_and_a_large_body_before_it_is_read() -> None:
    twice = [*signed_headers(IDENTITY, "sqs", **RECEIVE), (b"X-Amz-Target", b"AmazonSQS.PurgeQueue")]
    assert unclear_request("POST", "/", b"", twice, json.dumps({"QueueUrl": QUEUE}).encode(), ROOT)
    sent: list[dict[str, Any]] = []

    async def never(*_: Any) -> None:
        raise AssertionError("reached ministack")

    async def nothing_read() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def record(message: Any) -> None:
        sent.append(message)

    headers = [(b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    guarded = refuse_unclear_requests(never, ROOT, frozenset())

    async def call() -> None:
        await guarded(scope, nothing_read, record)

    asyncio.run(call())
    assert sent[0]["status"] == 413
