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
    BodyBudget,
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


def test_a_header_twice_is_refused() -> None:
    twice = [*signed_headers(IDENTITY, "sqs", **RECEIVE), (b"X-Amz-Target", b"AmazonSQS.PurgeQueue")]
    assert unclear_request("POST", "/", b"", twice, json.dumps({"QueueUrl": QUEUE}).encode(), ROOT)


async def _never(*_: Any) -> None:
    raise AssertionError("reached ministack")


async def _nothing_read() -> dict[str, Any]:
    raise AssertionError("the body was read")


def _scope(headers: list[tuple[bytes, bytes]], version: str = "1.1", client: str = "10.0.0.1") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": version,
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": headers,
        "client": (client, 50000),
    }


def test_what_the_headers_show_is_refused_before_a_byte_of_the_body_is_read() -> None:
    # Attack 22, F1: the body was read (up to 4 MiB a connection) before even the Authorization header was looked at.
    length = [(b"content-length", b"4000000")]
    signed = signed_headers(IDENTITY, "sqs", **RECEIVE)
    cases = {
        "no signature": (length, "1.1", 403),
        "a key the emulator does not have": (
            [*signed_headers("AKIAUNKNOWN000000000", "sqs", **RECEIVE), *length],
            "1.1",
            403,
        ),
        "over the size bound": ([*signed, (b"content-length", str(MAX_BODY_BYTES + 1).encode())], "1.1", 413),
        "no Content-Length (chunked)": ([*signed, (b"transfer-encoding", b"chunked")], "1.1", 411),
        "HTTP/2": ([*signed, *length], "2", 505),
        "a query string's target": (
            [*signed_headers(IDENTITY, "sqs", x_amz_target="x", content_type=JSON_TYPE), *length],
            "1.1",
            400,
        ),
    }
    guarded = refuse_unclear_requests(_never, ROOT, frozenset(), known_key=lambda key: key == IDENTITY)
    for what, (headers, version, status) in cases.items():
        sent: list[dict[str, Any]] = []

        async def record(message: Any, into: list[dict[str, Any]] = sent) -> None:
            into.append(message)

        asyncio.run(guarded(_scope(headers, version), _nothing_read, record))  # type: ignore[arg-type]
        assert sent[0]["status"] == status, what


def test_the_budget_bounds_bytes_held_in_all_and_per_client_address() -> None:
    budget = BodyBudget(total=100, per_peer=60)
    assert budget.take("a", 60) and not budget.take("a", 1)  # a's share is full
    assert budget.take("b", 40) and not budget.take("c", 1)  # the whole is full
    budget.give_back("a", 60)
    assert budget.take("c", 50) and budget.held == 90
    budget.give_back("b", 40)
    budget.give_back("c", 50)
    assert budget.held == 0 and budget.take("a", 60)


def test_bodies_over_the_budget_are_answered_503_and_every_byte_is_given_back() -> None:
    body = json.dumps({"QueueUrl": QUEUE}).encode()
    headers = [*signed_headers(IDENTITY, "sqs", **RECEIVE), (b"content-length", str(len(body)).encode())]
    budget = BodyBudget(total=3 * len(body), per_peer=2 * len(body))
    release = asyncio.Event()
    served: list[str] = []

    async def ministack(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["body"] == body
        served.append(scope["client"][0])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guarded = refuse_unclear_requests(ministack, ROOT, frozenset(), budget=budget)

    async def one(client: str) -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def record(message: Any) -> None:
            sent.append(message)

        await guarded(_scope(headers, client=client), receive, record)
        return int(sent[0]["status"])

    async def flood() -> list[int]:
        calls = [asyncio.create_task(one(client)) for client in ("a", "a", "a", "b", "c")]
        while len(served) < 3:
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert budget.held == 3 * len(body)
        release.set()
        return await asyncio.gather(*calls)

    statuses = asyncio.run(flood())
    assert statuses == [200, 200, 503, 200, 503]  # a's third over its share; c's over the whole
    assert sorted(served) == ["a", "a", "b"] and budget.held == 0
