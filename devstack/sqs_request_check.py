"""Which requests the SQS emulator serves: those ministack's IAM check and its SQS handler read alike.

ministack authorizes a request by the action and queue its IAM check reads (query `Action`, then
a form body's, then `X-Amz-Target`; QueueUrl from a JSON body, then the query string, then the
path; a queue by the last "/"-segment of the whole URL) and runs the action and queue its SQS
handler reads (`X-Amz-Target` first; the form body over the query string; the URL's path). A
request naming its action or queue twice, or a QueueUrl with a query or fragment, was checked as
one call and ran as another: any key made any SQS call on any queue (review 21, R21-1).

`refuse_unclear_requests` wraps ministack's ASGI app in devstack/sqs_auth_launcher.py (which
loads this file by its path, ministack's venv holding no devstack package) and serves only:
- a SigV4-signed POST to `/` with no query string, no header twice, a body not encoded (gzip,
  aws-chunked are inflated by ministack after this check) and at most MAX_BODY_BYTES;
- an SQS call of the JSON protocol, as boto3 sends it: `X-Amz-Target: AmazonSQS.<action>`, a JSON
  object naming no Action and at most one queue, a QueueUrl exactly `http(s)://host[:port]/<12
  digits>/<queue>`;
- with the set-up's root key only, a call of the form protocol signed for IAM: exactly one Action,
  each parameter once (the set-up's users, policies and keys).
The rest is refused before ministack sees it: 400 AmbiguousRequest, 403 with no signature, for a
key the emulator does not have or for a non-SQS call by another key, 411 without a Content-Length,
413 over the size bound, 408 when the body takes over BODY_SECONDS, 505 for HTTP/2. Everything that
can be judged from the headers is judged before this check reads a byte of the body (the event
loop may have read up to ~0.2 MiB of it: sqs_auth_launcher.read_in_small_pieces), and the bodies held at
once, all connections together, are bounded by a BodyBudget (attack 22, F1: 300 keyless
connections each holding a 4 MiB body OOM-killed the emulator under compose's 1 GiB limit, and
every queued event, dead letter and key went with it). Websockets are closed. Stdlib only.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPE = "application/x-amz-json-1.0"
FORM_TYPES = ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8")
SQS_TARGET = re.compile(r"AmazonSQS\.[A-Za-z]{1,64}")
ACTION = re.compile(r"[A-Za-z]{1,64}")
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
QUEUE_URL = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?/[0-9]{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?")
"""The one shape of QueueUrl served: IAM (its last two "/"-segments) and the handler (its path) read one queue."""
SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Za-z0-9]{1,128})/[0-9]{8}/[a-z0-9-]{1,32}/(?P<service>[a-z0-9-]{1,32})"
    r"/aws4_request, SignedHeaders=[a-z0-9;-]{1,2048}, Signature=[0-9a-f]{64}"
)
HOST = re.compile(r"([A-Za-z0-9-]{1,63}|[0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?")
"""A plain name or address: ministack routes hosts like <api>.execute-api.<domain>, <bucket>.s3.<domain> elsewhere."""
ENCODING_HEADERS = ("content-encoding", "x-amz-decoded-content-length")
"""ministack inflates (gzip) or de-chunks (aws-chunked) such a body after this check read it: refused."""
MAX_BODY_BYTES = 4 * 1024 * 1024
"""SQS's largest request (a batch of 1 MiB) JSON-escaped, with room to spare."""
BODY_SECONDS = 10.0
"""How long a request's body may take to arrive, once its headers are in: a client that trickles it
is answered 408 and its connection closed (attack 21, F3: such connections were held forever)."""
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
"""Request bytes held at once, all connections together (a body from its first byte until ministack has answered
it): eight of SQS's largest requests, far more than the stack's clients send at once. ministack's own parse of a
body costs a few times its size, so this bounds the emulator's memory well inside compose's 1 GiB."""
PEER_BUFFERED_BYTES = 8 * 1024 * 1024
"""Of MAX_BUFFERED_BYTES, what the connections of one client address may hold (compose: one container)."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is answered before ministack sees it."""

    status: int
    code: str
    reason: str


BUDGET_FULL = Refusal(
    503, "ServiceUnavailable", "the emulator holds as many request bodies as it may at once: retry shortly"
)


class BodyBudget:
    """The request bytes held at once, in all and per client address (one event loop: no lock needed)."""

    def __init__(self, total: int = MAX_BUFFERED_BYTES, per_peer: int = PEER_BUFFERED_BYTES) -> None:
        self.total, self.per_peer = total, per_peer
        self.held = 0
        self._by_peer: dict[str, int] = {}

    def take(self, peer: str, size: int) -> bool:
        """Hold `size` more bytes for `peer`; False (nothing held) when that would pass either bound."""
        peer_held = self._by_peer.get(peer, 0)
        if self.held + size > self.total or peer_held + size > self.per_peer:
            return False
        self.held += size
        self._by_peer[peer] = peer_held + size
        return True

    def give_back(self, peer: str, size: int) -> None:
        """Release `size` bytes `peer` held."""
        self.held -= size
        left = self._by_peer.get(peer, 0) - size
        if left > 0:
            self._by_peer[peer] = left
        else:
            self._by_peer.pop(peer, None)


def ambiguous(reason: str) -> Refusal:
    """A request ministack's IAM check and its SQS handler could read differently."""
    return Refusal(400, "AmbiguousRequest", reason)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("a key given more than once")
    return dict(pairs)


def unclear_queue(queue_url: Any, queue_name: Any) -> Refusal | None:
    """At most one queue, named so that IAM and the handler read the same one."""
    if queue_url is not None and queue_name is not None:
        return ambiguous("both QueueUrl and QueueName")
    if queue_url is not None and not (isinstance(queue_url, str) and QUEUE_URL.fullmatch(queue_url)):
        return ambiguous("a QueueUrl not of the form http(s)://host[:port]/<12 digits>/<queue name>")
    if queue_name is not None and not (isinstance(queue_name, str) and QUEUE_NAME.fullmatch(queue_name)):
        return ambiguous("a QueueName that is not a queue name")
    return None


def unclear_json_call(fields: dict[str, str], body: bytes) -> Refusal | None:
    """An SQS call of the JSON protocol, as boto3 sends it: its target the one action, its body the one queue."""
    if not SQS_TARGET.fullmatch(fields["x-amz-target"]) or fields.get("content-type") != JSON_TYPE:
        return ambiguous(f"X-Amz-Target not AmazonSQS.<action> with Content-Type {JSON_TYPE}")
    try:
        data = json.loads(body, object_pairs_hook=_unique_keys)
    except ValueError:
        return ambiguous("X-Amz-Target with a body that is not JSON (or names a key twice)")
    if not isinstance(data, dict) or "Action" in data:
        return ambiguous("X-Amz-Target with a body that is not a JSON object, or that names an Action")
    return unclear_queue(data.get("QueueUrl"), data.get("QueueName"))


def unclear_form_call(fields: dict[str, str], body: bytes) -> Refusal | None:
    """A call of the form (query) protocol: exactly one Action, each parameter once, in the body only."""
    if fields.get("content-type") not in FORM_TYPES:
        return ambiguous("no X-Amz-Target and not a form body")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        params = _unique_keys(pairs)
    except ValueError:
        return ambiguous("a form body not in UTF-8, or naming a parameter twice")
    if not ACTION.fullmatch(params.get("Action", "")):
        return ambiguous("a form body without exactly one Action")
    try:
        json.loads(body)
    except ValueError:
        return unclear_queue(params.get("QueueUrl"), params.get("QueueName"))
    return ambiguous("a form body that is also JSON")  # IAM reads a queue from a JSON body first


def unclear_headers(
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    root_key: str,
    known_key: Callable[[str], bool] | None = None,
) -> Refusal | None:
    """What the headers alone show to be refused (before the body is read), or None.

    `known_key`, when given, says whether the emulator has an access key (an unknown one's body is never read).
    """
    fields = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    if len(fields) != len(headers):
        return ambiguous("a header given more than once (ministack joins them)")
    if method != "POST" or path != "/" or query:
        return ambiguous("not a POST to / without a query string (every parameter goes in the body)")
    if not HOST.fullmatch(fields.get("host", "localhost")):
        return ambiguous("a Host other than a plain name or address (ministack routes service hosts elsewhere)")
    streamed = fields.get("x-amz-content-sha256", "").startswith("STREAMING-")
    if streamed or any(name in fields for name in ENCODING_HEADERS):
        return ambiguous("an encoded body (Content-Encoding, aws-chunked)")
    signed = SIGV4.fullmatch(fields.get("authorization", ""))
    if signed is None:
        return Refusal(403, "MissingAuthenticationToken", "no SigV4 Authorization header")
    if known_key is not None and not known_key(signed["key"]):
        return Refusal(403, "InvalidClientTokenId", "an access key the emulator does not have")
    if "x-amz-target" in fields:
        if signed["service"] != "sqs":
            return ambiguous("X-Amz-Target signed for a service other than sqs")
        if not SQS_TARGET.fullmatch(fields["x-amz-target"]) or fields.get("content-type") != JSON_TYPE:
            return ambiguous(f"X-Amz-Target not AmazonSQS.<action> with Content-Type {JSON_TYPE}")
        return None
    if signed["service"] != "iam" or not hmac.compare_digest(signed["key"].encode(), root_key.encode()):
        return Refusal(
            403, "AccessDenied", "served: SQS calls of the JSON protocol, IAM calls of the set-up's root key"
        )
    if fields.get("content-type") not in FORM_TYPES:
        return ambiguous("no X-Amz-Target and not a form body")
    return None


def unclear_body(headers: list[tuple[bytes, bytes]], body: bytes) -> Refusal | None:
    """What the body of a request whose headers passed `unclear_headers` shows to be refused, or None."""
    fields = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    if "x-amz-target" in fields:
        return unclear_json_call(fields, body)
    return unclear_form_call(fields, body)


def unclear_request(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes, root_key: str
) -> Refusal | None:
    """Why ministack's IAM check and its handler could read this request differently, or None when they cannot."""
    return unclear_headers(method, path, query, headers, root_key) or unclear_body(headers, body)


async def _send_refusal(send: Send, refusal: Refusal, json_protocol: bool) -> None:
    message = f"refused by the emulator's launcher: {refusal.reason}"
    if json_protocol:
        body = json.dumps({"__type": f"com.amazonaws.sqs#{refusal.code}", "message": message}).encode()
        headers = [(b"content-type", JSON_TYPE.encode()), (b"x-amzn-query-error", f"{refusal.code};Sender".encode())]
    else:
        text = html.escape(message, quote=False)
        error = f"<Error><Type>Sender</Type><Code>{refusal.code}</Code><Message>{text}</Message></Error>"
        body = f"<ErrorResponse>{error}</ErrorResponse>".encode()
        headers = [(b"content-type", b"text/xml")]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _bounded_body(
    scope: Scope, receive: Receive, seconds: float, budget: BodyBudget, peer: str
) -> bytes | Refusal | None:
    """The whole request body, its bytes held in `budget` for `peer` (the caller gives them back); else nothing held.

    A Refusal without a Content-Length, past it or MAX_BODY_BYTES, past `seconds`, or when the budget is
    full; None when the client went away.
    """
    fields = dict(scope.get("headers", []))
    declared = fields.get(b"content-length")
    if declared is None or b"transfer-encoding" in fields:
        return Refusal(411, "MissingContentLength", "a body without a Content-Length (SQS clients send one)")
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        return Refusal(413, "RequestEntityTooLarge", f"a body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size, more, kept = 0, True, False
    try:
        async with asyncio.timeout(seconds):
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                if size + len(chunk) > int(declared):
                    return ambiguous("a body longer than its Content-Length")
                if not budget.take(peer, len(chunk)):
                    return BUDGET_FULL
                chunks.append(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
    except TimeoutError:
        return Refusal(408, "RequestTimeout", f"a body that took over {seconds:g} s to arrive")
    else:
        kept = True
        return b"".join(chunks)
    finally:
        if not kept:
            budget.give_back(peer, size)


def refuse_unclear_requests(
    app: App,
    root_key: str,
    unchecked_paths: frozenset[str],
    body_seconds: float = BODY_SECONDS,
    known_key: Callable[[str], bool] | None = None,
    budget: BodyBudget | None = None,
) -> App:
    """`app` serving only requests its IAM check and its handler read alike, and GETs of `unchecked_paths` (health).

    The headers are judged first (`unclear_headers`, with `known_key`), then the body is read: it must arrive
    whole within `body_seconds` of the headers (else 408, and the connection is closed), its bytes held in
    `budget` (a fresh BodyBudget when None) until `app` has answered.
    """
    held = budget if budget is not None else BodyBudget()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        unchecked = scope.get("path", "") in unchecked_paths and scope.get("method") in ("GET", "HEAD")
        if scope["type"] != "http" or unchecked:
            await app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        json_protocol = any(name.lower() == b"x-amz-target" for name, _ in headers)
        path, query = scope.get("path", ""), scope.get("query_string", b"")
        if scope.get("http_version") not in ("1.0", "1.1"):
            refusal: Refusal | None = Refusal(505, "HttpVersionNotSupported", "HTTP/2 (SQS clients speak HTTP/1.1)")
        else:
            refusal = unclear_headers(scope["method"], path, query, headers, root_key, known_key)
        if refusal:
            await _send_refusal(send, refusal, json_protocol)
            return
        peer = str((scope.get("client") or ("", 0))[0])
        body = await _bounded_body(scope, receive, body_seconds, held, peer)
        if body is None:
            return
        try:
            if isinstance(body, Refusal):
                await _send_refusal(send, body, json_protocol)
            elif refusal := unclear_body(headers, body):
                await _send_refusal(send, refusal, json_protocol)
            else:
                await app(scope, _replaying(body, receive), send)
        finally:
            if not isinstance(body, Refusal):
                held.give_back(peer, len(body))

    return guarded


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` whole first, then what the connection sends (its disconnect)."""
    replayed = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def signed_headers(key: str, service: str, **fields: str) -> list[tuple[bytes, bytes]]:
    """Headers of a request signed (in form; the signature is ministack's to check) by `key` for `service`."""
    scope = f"{key}/20260101/us-east-1/{service}/aws4_request"
    authorization = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature={'0' * 64}"
    named = {"authorization": authorization, **{name.replace("_", "-"): value for name, value in fields.items()}}
    return [(name.encode(), value.encode()) for name, value in named.items()]


def misjudged(root_key: str) -> str | None:
    """None when boto3's requests are served and review 21's confused ones refused; else the one misjudged."""
    identity, queue = "AKIA0000000000000000", "http://localstack:4566/000000000000/login-queue"
    form = {"content_type": FORM_TYPES[0]}
    receive = {"x_amz_target": "AmazonSQS.ReceiveMessage", "content_type": JSON_TYPE}
    served = [
        ("", signed_headers(identity, "sqs", **receive), json.dumps({"QueueUrl": queue})),
        ("", signed_headers(root_key, "iam", **form), "Action=CreateUser&Version=2010-05-08&UserName=x"),
    ]
    refused = [
        ("Action=SendMessage", signed_headers(identity, "sqs", **receive), json.dumps({"QueueUrl": queue})),
        (
            "",
            signed_headers(identity, "sqs", x_amz_target="AmazonSQS.SendMessage", **form),
            f"Action=ReceiveMessage&QueueUrl={queue}",
        ),
        (f"QueueUrl={queue}-dlq", signed_headers(identity, "sqs", **form), f"Action=ReceiveMessage&QueueUrl={queue}"),
        ("", signed_headers(identity, "sqs", **receive), json.dumps({"QueueUrl": f"{queue}?x=/login-queue-dlq"})),
        ("", signed_headers(identity, "sqs", **receive), json.dumps({"QueueUrl": f"{queue}#/login-queue-dlq"})),
        ("", signed_headers(identity, "sqs", **receive), json.dumps({"QueueUrl": queue, "Action": "SendMessage"})),
        ("", signed_headers(identity, "sqs", content_encoding="gzip", **receive), json.dumps({"QueueUrl": queue})),
        (
            "",
            signed_headers(identity, "sqs", host="a.execute-api.localhost", **receive),
            json.dumps({"QueueUrl": queue}),
        ),
        ("", signed_headers(identity, "sqs", **form), f"Action=ReceiveMessage&QueueUrl={queue}"),
        ("", signed_headers(root_key, "iam", **form), "Action=GetUser&Action=CreateAccessKey"),
    ]
    for query, headers, body in (*served, *refused):
        refusal = unclear_request("POST", "/", query.encode(), headers, body.encode(), root_key)
        if (refusal is None) != ((query, headers, body) in served):
            return f"{query!r} {body[:60]!r}: {refusal}"
    if unclear_request("POST", "/000000000000/login-queue", b"", served[0][1], served[0][2].encode(), root_key) is None:
        return "a request to a queue's path is served"
    return None
