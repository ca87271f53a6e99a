"""The embedded stack's SQS emulator checks every key and holds each identity to its shipped policy.

ministack with AUTH=true still takes the key "test", an empty key and any 12-digit account id for
root, unchecked; and its `/_ministack/*` endpoints list every message or delete all state for
anyone. Through devstack/sqs_auth_launcher.py only the set-up's random root key is root, its
signature checked. Real ministack, started as `make up` starts it (devstack.sqs.start_sqs).
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import botocore.config
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from devstack import sqs as devstack_sqs
from devstack import sqs_init
from devstack.procs import StackError, alive, spawn, stop_pid
from devstack.sqs import LAUNCHER, MINISTACK_VENV, SqsEndpoint, sqs_client, start_sqs
from devstack.sqs_identities import IDENTITIES, SqsKey, policy_document, root_key
from etl_service.adapters.sqs import make_sqs_client

pytestmark = pytest.mark.integration
REFUSED = {
    "AccessDenied",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
}
NEVER_GRANTED = ("sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:CreateQueue")
LAUNCHER_REFUSAL = "refused by the emulator's launcher"
BODY_SECONDS = 1.5
JSON_CALL = {"Content-Type": "application/x-amz-json-1.0"}
FORM_CALL = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


@dataclass
class Emulator:
    """The authenticated endpoint, and the root key its set-up made (captured for the refusals below)."""

    sqs: SqsEndpoint
    root: SqsKey


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    made: list[SqsKey] = []

    def captured() -> SqsKey:
        made.append(root_key())
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("devstack.sqs.root_key", captured)
        patch.setenv("SQS_BODY_SECONDS", str(BODY_SECONDS))  # the launcher's 10 s, shortened for the test
        sqs = start_sqs(Path(tmp_path_factory.mktemp("sqs-auth")) / "ministack.log", authenticated=True)
    try:
        yield Emulator(sqs, made[0])
    finally:
        stop_pid(sqs.pid)


def error_code(call: Callable[[], Any]) -> str:
    """The error code of `call`, or "" when it succeeds."""
    try:
        call()
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return ""


def unsigned_client(endpoint_url: str) -> Any:
    config = botocore.config.Config(signature_version=UNSIGNED, retries={"max_attempts": 1})
    return boto3.client("sqs", endpoint_url=endpoint_url, region_name="us-east-1", config=config)


def test_keys_taken_for_root_upstream_unsigned_requests_and_wrong_secrets_are_refused(emulator: Emulator) -> None:
    sqs = emulator.sqs
    endpoint, queue = sqs.endpoint_url, sqs.queue_url

    def receive(key: SqsKey) -> str:
        return error_code(lambda: sqs_client(endpoint, key).receive_message(QueueUrl=queue, WaitTimeSeconds=0))

    assert receive(emulator.root) == ""  # the control
    etl = sqs.keys["etl"]
    attempts = {
        "test": SqsKey("test", "test"),
        "account id": SqsKey("000000000000", "anything"),
        "another account id": SqsKey("123456789012", "anything"),
        "root key, wrong secret": SqsKey(emulator.root.access_key_id, "wrong-secret"),
        "ETL key, wrong secret": SqsKey(etl.access_key_id, "wrong-secret"),
    }
    for what, key in attempts.items():
        assert receive(key) in REFUSED, (what, receive(key))
    assert error_code(lambda: unsigned_client(endpoint).receive_message(QueueUrl=queue)) in REFUSED
    # ministack's own endpoints ask for no key at all: closed, but for the health check.
    host, port = endpoint.removeprefix("http://").split(":")
    for method, path, status in (
        ("GET", "/_ministack/sqs/messages", 403),
        ("POST", "/_ministack/reset", 403),
        ("GET", "/_ministack/health", 200),
    ):
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request(method, path)
        assert connection.getresponse().status == status, path
        connection.close()


def granted(identity: str) -> set[tuple[str, str]]:
    """(action, queue ARN) of every SQS permission the identity's shipped policy gives it."""
    found = set()
    for statement in json.loads(policy_document(IDENTITIES[identity]))["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            if action.startswith("sqs:"):
                found |= {(action, r) for r in ([resources] if isinstance(resources, str) else resources)}
    return found


def sqs_calls(client: Any, url: str) -> list[tuple[str, Callable[[], Any]]]:
    """(IAM action, a harmless call needing it) on queue `url`; a batch needs its single call's action, as in AWS."""
    handle = {"Id": "0", "ReceiptHandle": "not-a-handle"}
    return [
        ("sqs:GetQueueAttributes", lambda: client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])),
        ("sqs:ReceiveMessage", lambda: client.receive_message(QueueUrl=url, WaitTimeSeconds=0)),
        ("sqs:SendMessage", lambda: client.send_message(QueueUrl=url, MessageBody='{"probe": true}')),
        (
            "sqs:SendMessage",
            lambda: client.send_message_batch(QueueUrl=url, Entries=[{"Id": "0", "MessageBody": "{}"}]),
        ),
        ("sqs:DeleteMessage", lambda: client.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")),
        ("sqs:DeleteMessage", lambda: client.delete_message_batch(QueueUrl=url, Entries=[handle])),
        (
            "sqs:ChangeMessageVisibility",
            lambda: client.change_message_visibility(QueueUrl=url, ReceiptHandle="not-a-handle", VisibilityTimeout=0),
        ),
        (
            "sqs:ChangeMessageVisibility",
            lambda: client.change_message_visibility_batch(QueueUrl=url, Entries=[{**handle, "VisibilityTimeout": 0}]),
        ),
        (
            "sqs:SetQueueAttributes",
            lambda: client.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "262144"}),
        ),
        ("sqs:PurgeQueue", lambda: client.purge_queue(QueueUrl=url)),
        ("sqs:DeleteQueue", lambda: client.delete_queue(QueueUrl=url)),  # last: it would end the test
    ]


def test_each_identity_makes_exactly_the_calls_its_shipped_policy_grants(emulator: Emulator) -> None:
    sqs = emulator.sqs
    arns = {url: f"arn:aws:sqs:us-east-1:000000000000:{url.rsplit('/', 1)[1]}" for url in (sqs.queue_url, sqs.dlq_url)}
    assert set(sqs.keys) == set(IDENTITIES)
    for identity, key in sqs.keys.items():
        allowed = granted(identity)
        assert allowed and not {action for action, _ in allowed} & set(NEVER_GRANTED)
        client = sqs_client(sqs.endpoint_url, key)
        for url, arn in arns.items():
            for action, call in sqs_calls(client, url):
                passed = error_code(call) != "AccessDenied"
                assert passed == ((action, arn) in allowed), (identity, action, arn, passed)
    create = sqs_client(sqs.endpoint_url, sqs.keys["etl"]).create_queue
    assert error_code(lambda: create(QueueName="login-queue-2")) == "AccessDenied"


def signed_request(
    endpoint: str, key: SqsKey, method: str, target: str, headers: dict[str, str], body: bytes, service: str = "sqs"
) -> tuple[int, str]:
    """(status, body) of a hand-made request to `target` (path and query) signed with `key`'s SigV4 signature."""
    request = AWSRequest(method=method, url=endpoint + target, data=body, headers=headers)
    SigV4Auth(Credentials(key.access_key_id, key.secret_access_key), service, "us-east-1").add_auth(request)
    host, port = endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, target, body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def confused_requests(queue_url: str, dlq_url: str) -> dict[str, tuple[str, str, dict[str, str], bytes, str]]:
    """Review 21 (R21-1) and attack 21 (F1): what ministack's IAM check read as one call or queue and ran as another."""
    receive = json.dumps({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 0}).encode()
    form_receive = urlencode({"Action": "ReceiveMessage", "QueueUrl": queue_url, "VisibilityTimeout": 0}).encode()
    harmless_set = json.dumps({"QueueUrl": queue_url, "Attributes": {"MaximumMessageSize": "262144"}}).encode()
    return {
        "Action in the query, another in X-Amz-Target": (
            "POST", "/?Action=SendMessage", {"X-Amz-Target": "AmazonSQS.ReceiveMessage", **JSON_CALL}, receive, "sqs"
        ),
        "an allowed Action in the query, SetQueueAttributes in X-Amz-Target": (
            "POST", "/?Action=ReceiveMessage", {"X-Amz-Target": "AmazonSQS.SetQueueAttributes", **JSON_CALL},
            harmless_set, "sqs",
        ),
        "QueueUrl in the query and in the form body": (
            "POST", "/?" + urlencode({"QueueUrl": dlq_url}), FORM_CALL, form_receive, "sqs"
        ),
        "a queue in the path, another in the form body": (
            "POST", "/" + dlq_url.split("/", 3)[3], FORM_CALL, form_receive, "sqs"
        ),
        "a target of no service with a form body": (
            "POST", "/", {"X-Amz-Target": "Foo.SendMessage", **JSON_CALL}, form_receive, "sqs"
        ),
        "a gzip body (inflated after the check)": (
            "POST", "/", {"X-Amz-Target": "AmazonSQS.ReceiveMessage", "Content-Encoding": "gzip", **JSON_CALL},
            gzip.compress(receive), "sqs",
        ),
        "a service host": (
            "POST", "/", {"Host": "a.execute-api.localhost", "X-Amz-Target": "AmazonSQS.ReceiveMessage", **JSON_CALL},
            receive, "sqs",
        ),
        "an IAM call by an identity": (
            "POST", "/", FORM_CALL, b"Action=CreateAccessKey&UserName=tokenvault-etl&Version=2010-05-08", "iam"
        ),
        "an S3 call": ("PUT", "/r21-bucket", {}, b"", "s3"),
    }  # fmt: skip


def test_requests_iam_and_the_sqs_handler_could_read_differently_are_refused_for_every_key(
    emulator: Emulator,
) -> None:
    sqs = emulator.sqs
    for identity, key in sqs.keys.items():
        for what, (method, target, headers, body, service) in confused_requests(sqs.queue_url, sqs.dlq_url).items():
            status, answer = signed_request(sqs.endpoint_url, key, method, target, headers, body, service)
            assert status in (400, 403) and LAUNCHER_REFUSAL in answer, (identity, what, status)
        client = sqs_client(sqs.endpoint_url, key)
        for url in (f"{sqs.queue_url}?x=/login-queue-dlq", f"{sqs.queue_url}#/login-queue-dlq", f"{sqs.dlq_url}?x=/q"):
            receive = partial(client.receive_message, QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=0)
            assert error_code(receive) == "AmbiguousRequest", (identity, url)


def _raw_headers(host: str, key_id: str, length: int) -> bytes:
    """A JSON ReceiveMessage's headers, in the form SigV4 signs, under `key_id` (the signature made up)."""
    credential = f"{key_id}/20260101/us-east-1/sqs/aws4_request"
    return (
        f"POST / HTTP/1.1\r\nHost: {host}\r\nX-Amz-Target: AmazonSQS.ReceiveMessage\r\n"
        f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {length}\r\n"
        f"Authorization: AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature={'0' * 64}\r\n\r\n"
    ).encode()


def _rss_bytes(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024


def test_a_body_over_the_bound_is_refused_before_it_is_read(emulator: Emulator) -> None:
    host, port = emulator.sqs.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(_raw_headers(host, emulator.sqs.keys["etl"].access_key_id, 5 * 1024 * 1024))
        assert connection.recv(4096).startswith(b"HTTP/1.1 413")  # no body sent: refused on the length alone


def test_a_trickled_body_is_answered_408_and_its_connection_closed_while_others_are_served(
    emulator: Emulator,
) -> None:
    # Attack 21, F3: headers, then a byte now and then (never idle long enough for a read timeout).
    sqs = emulator.sqs
    host, port = sqs.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=0.25) as slow:
        slow.sendall(_raw_headers(host, sqs.keys["etl"].access_key_id, 1000) + b"{")
        deadline = time.monotonic() + BODY_SECONDS + 2
        client = sqs_client(sqs.endpoint_url, sqs.keys["etl"])
        assert client.receive_message(QueueUrl=sqs.queue_url, WaitTimeSeconds=0)["ResponseMetadata"]
        answer, closed = b"", False
        while not closed and time.monotonic() < deadline:
            try:
                chunk = slow.recv(4096)
            except TimeoutError:
                slow.sendall(b" ")
                continue
            answer, closed = answer + chunk, not chunk
    assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:80]


def test_a_body_under_a_key_the_emulator_does_not_have_is_refused_before_it_is_read(emulator: Emulator) -> None:
    # Attack 22, F1: without a key, a body was read whole (4 MiB a connection) before its headers were judged.
    host, port = emulator.sqs.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=BODY_SECONDS - 0.5) as connection:
        connection.sendall(_raw_headers(host, "AKIA" + "Z" * 16, 1024 * 1024))  # headers only, no body
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403") and b"InvalidClientTokenId" in answer, answer[:80]


def test_bodies_held_at_once_are_bounded_and_http2_is_closed_unserved(emulator: Emulator) -> None:
    # Attack 22, F1: 300 connections holding 4 MiB bodies OOM-killed the emulator under compose's 1 GiB; one
    # h2c connection carried 100 such streams. A key id is no secret: the holders here use the ETL's, unsigned.
    sqs = emulator.sqs
    host, port = sqs.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as http2:
        http2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert http2.recv(4096) == b""  # closed, no SETTINGS frame: HTTP/2 is not spoken
    rss_before, chunk, holders = _rss_bytes(sqs.pid), b" " * (1024 * 1024), []
    try:
        for _ in range(80):
            holder = socket.create_connection((host, int(port)), timeout=0.5)
            holders.append(holder)
            holder.sendall(_raw_headers(host, sqs.keys["etl"].access_key_id, 2 * len(chunk)))
            with contextlib.suppress(OSError):  # refused and closed while sending
                holder.sendall(chunk)  # half the body; the rest never comes
        time.sleep(0.3)
        grown = _rss_bytes(sqs.pid) - rss_before
        answers = []
        for holder in holders:
            try:
                answers.append(holder.recv(64))
            except OSError:
                answers.append(b"")
    finally:
        for holder in holders:
            holder.close()
    refused = sum(answer.startswith(b"HTTP/1.1 503") for answer in answers)
    assert refused >= 60, refused  # at most 8 MiB held per client address: the rest refused at once
    assert grown < 80 * 1024 * 1024, grown  # 80 MiB sent (105 MB grown before; 800 connections: ~130 MB, flat)
    client = sqs_client(sqs.endpoint_url, sqs.keys["etl"])
    assert (
        client.receive_message(QueueUrl=sqs.queue_url, WaitTimeSeconds=0)["ResponseMetadata"]["HTTPStatusCode"] == 200
    )


def test_the_launcher_refuses_to_start_with_a_key_upstream_takes_for_root() -> None:
    for key in ("test", "000000000000", ""):
        env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "x" * 40}
        started = subprocess.run(
            [str(MINISTACK_VENV / "bin" / "python"), str(LAUNCHER), "--bind", "127.0.0.1:1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert started.returncode == 2 and "REFUSING TO START" in started.stderr, (key, started.stderr[-300:])


def test_compose_s_set_up_job_hands_each_identity_its_key_once_and_replaces_a_stale_one(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emulator.root.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emulator.root.secret_access_key)
    endpoint, uid = emulator.sqs.endpoint_url, os.getuid()
    args = ["--endpoint-url", endpoint, f"producer:{uid}:{tmp_path}"]
    assert sqs_init.main(args) == 0
    written = sqs_init.credentials_file(tmp_path, "producer")
    assert written.stat().st_mode & 0o777 == 0o400
    first = written.read_text()
    # A key handed out is kept - read back without reading the 0400 file, as compose's job (root with no
    # capability but CHOWN) cannot: it re-keyed the running ETL at every second `up` until its key-id file.
    real_read_text = Path.read_text

    def unreadable_credentials(path: Path, *args: object, **kwargs: object) -> str:
        if path == written:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_text(path, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as job:
        job.setattr(Path, "read_text", unreadable_credentials)
        assert sqs_init.main(args) == 0
    assert written.read_text() == first
    written.unlink()  # a key the user no longer has (review 21, R21-6): replaced, not kept
    written.write_text("[default]\naws_access_key_id = AKIAMADEUP0000000000\naws_secret_access_key = x\n")
    sqs_init.key_id_file(written).chmod(0o644)
    sqs_init.key_id_file(written).write_text("AKIAMADEUP0000000000\n")
    assert sqs_init.main(args) == 0 and "AKIAMADEUP" not in written.read_text()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(written))
    producer = make_sqs_client(endpoint, "us-east-1")  # the key from the file, as compose's load-sample
    producer.send_message(QueueUrl=emulator.sqs.queue_url, MessageBody="{}")
    assert error_code(lambda: producer.receive_message(QueueUrl=emulator.sqs.queue_url)) == "AccessDenied"


def test_an_endpoint_that_takes_the_key_test_is_refused_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ministack whose root bypass came back (here: the launcher's patches skipped) fails the
    # set-up, and the set-up stops the process it started: no caller ever had its PID.
    spawned: list[int] = []

    def spawn_recorded(*args: Any, **kwargs: Any) -> int:
        spawned.append(spawn(*args, **kwargs))
        return spawned[-1]

    unpatched = tmp_path / "sqs_auth_launcher.py"
    source = LAUNCHER.read_text().replace("    close_root_bypass(iam_evaluator, sts, root_key)\n", "")
    for check in ("    check_patched(iam_evaluator, root_key)\n", "    check_known_keys(known, root_key)\n"):
        source = source.replace(check, "")
    unpatched.write_text(source)
    for beside in ("ministack-requirements.txt", "sqs_request_check.py"):
        (tmp_path / beside).write_text(LAUNCHER.with_name(beside).read_text())
    monkeypatch.setattr(devstack_sqs, "LAUNCHER", unpatched)
    monkeypatch.setattr(devstack_sqs, "spawn", spawn_recorded)
    with pytest.raises(StackError, match="accepted the key 'test'"):
        start_sqs(tmp_path / "ministack.log", authenticated=True)
    assert spawned and not alive(spawned[0])
