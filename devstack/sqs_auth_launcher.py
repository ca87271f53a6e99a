"""ministack with authentication that has no way around it: runs in ministack's own venv.

With `AUTH=true` ministack verifies the SigV4 signature of IAM users' keys and enforces their
policies, but it treats as root, unchecked and allowed everything, the key "test", an empty key,
any 12-digit account id and the configured key (`ministack/core/iam_evaluator.py`:
`is_root_access_key`; `caller_verified` and `pin_signed_request` skip root keys through
`_is_root_key`). And its `/_ministack/*` endpoints answer without credentials: `GET
/_ministack/sqs/messages` lists every message of every queue, `POST /_ministack/reset` deletes
all state (the IAM users with it).

This launcher, started by the stack's set-up (devstack/sqs.py, compose's `sqs` service):
- makes the random root key of the stack's set-up (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  in this process's environment) the only root key, and has its signature verified like any
  other key's (its secret is that environment's);
- authorizes SQS's batch calls as AWS does, by the action of the single call (SendMessageBatch
  needs sqs:SendMessage; ministack asks for an sqs:SendMessageBatch no IAM policy can grant);
- refuses every path under `/_` except the health checks, before ministack sees it;
- serves only requests that ministack's IAM check and its SQS handler read alike
  (sqs_request_check.py, beside this file: review 21, R21-1): boto3's SQS calls, and the
  set-up's IAM calls with the root key; the rest is refused before ministack sees it;
- checks at start that ministack is the version these patches were written for and that the
  patched functions behave as they must, else exits 2 saying so (a new ministack may have moved
  the bypass elsewhere: read its iam_evaluator.py again before changing the pin);
- serves in this process (hypercorn's asyncio server), so no worker re-imports an unpatched app;
- bounds how long a connection is held (attack 21, F3: anonymous connections that sent headers and
  trickled a body were never closed, ~20,000 of them exhausted the fds): a read waits at most
  READ_SECONDS (above SQS's longest long poll), a body must arrive within BODY_SECONDS
  (SQS_BODY_SECONDS in the environment may only shorten it), at most `connection_cap()`
  connections are open at once (more are closed at once), and running out of fds is logged once
  a minute, not with a traceback per accept;
- bounds the memory request bodies take (attack 22, F1: 300 keyless connections holding 4 MiB
  bodies OOM-killed the emulator, and every queued event, dead letter and key with it): a key the
  emulator does not have is refused on its headers, before its body is read; the bodies held at
  once are bounded in all and per client address (sqs_request_check.BodyBudget); HTTP/2 (h2c, which
  hypercorn serves on the same port, 100 streams a connection) is closed unserved; and the event
  loop reads a socket 16 KiB at a time (asyncio's 256 KiB let ~0.5 MiB of each keyless connection's
  body be read before its headers were judged: 900 such connections +415-530 MB; review 22, R22-1).

Usage: python sqs_auth_launcher.py --bind 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hmac
import importlib.util
import inspect
import json
import logging
import math
import os
import re
import resource
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import metadata
from pathlib import Path
from typing import Any

REQUIREMENTS = Path(__file__).resolve().with_name("ministack-requirements.txt")
HEALTH_PATHS = frozenset({"/_ministack/health", "/_localstack/health", "/health"})
ACCOUNT_ID = re.compile(r"\d{12}")
WEAK_ROOT_KEYS = ("test", "000000000000")
"""Keys upstream treats as root without a signature check: each must be refused here."""
LONGEST_LONG_POLL_SECONDS = 20
"""SQS's largest WaitTimeSeconds (the ETL's ETL_WAIT_SECONDS at most): a request the emulator may hold that long."""
READ_SECONDS = LONGEST_LONG_POLL_SECONDS + 25
"""hypercorn closes a connection that sends nothing for this long (its default waits forever). Above the
longest long poll: at 10 s, the call after an idle 20 s receive on the same connection hung until the
client's 30 s timeout (review 21, R21-9); anonymous slow bodies are bounded by BODY_SECONDS instead."""
BODY_SECONDS = 10
"""A request's body must arrive within this long after its headers (attack 21, F3)."""
MAX_CONNECTIONS = 1000
"""Connections open at once, at most: far more than the stack's clients open, far fewer than the fds."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class LauncherError(Exception):
    """The launcher cannot vouch for authentication: it exits 2 with the reason."""


def pinned_version() -> str:
    """The version of ministack pinned in ministack-requirements.txt."""
    for line in REQUIREMENTS.read_text().splitlines():
        if line.lower().startswith("ministack=="):
            return line.split("==", 1)[1].strip()
    raise LauncherError(f"no ministack pin in {REQUIREMENTS}")


def root_credentials(env: MutableMapping[str, str]) -> tuple[str, str]:
    """The stack's root key and secret, refused when upstream would also take them as a bypass."""
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if len(key) < 16 or len(secret) < 32 or key in WEAK_ROOT_KEYS or ACCOUNT_ID.fullmatch(key):
        raise LauncherError("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY must be the stack's random root key")
    return key, secret


def close_root_bypass(iam: Any, sts: Any, root_key: str) -> None:
    """Only `root_key` is root, and its signature is checked like an IAM user's."""
    expected = ("is_root_access_key", "_is_root_key", "caller_verified", "pin_signed_request", "resolve_credential")
    missing = [name for name in expected if not callable(getattr(iam, name, None))]
    if missing or not callable(getattr(sts, "is_root_access_key", None)):
        raise LauncherError(f"ministack's iam_evaluator changed: {missing or 'sts.is_root_access_key'} missing")
    for name in ("caller_verified", "pin_signed_request"):  # where root skipped the signature check
        if "_is_root_key(" not in inspect.getsource(getattr(iam, name)):
            raise LauncherError(f"ministack's {name} no longer asks _is_root_key: re-read it before pinning")
    if not iam.is_root_access_key("test"):
        raise LauncherError("ministack no longer treats 'test' as root: re-read iam_evaluator before pinning")

    def is_root_access_key(access_key_id: str) -> bool:
        return bool(access_key_id) and hmac.compare_digest(access_key_id.encode(), root_key.encode())

    def is_unchecked_root_key(access_key_id: str) -> bool:
        return False  # no key skips the signature check, root's included

    iam.is_root_access_key = is_root_access_key
    sts.is_root_access_key = is_root_access_key  # imported by name there
    iam._is_root_key = is_unchecked_root_key


BATCH_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
"""Batch call -> the IAM action AWS authorizes it by (there is no IAM action of the batch's own name)."""


def authorize_batches_as_aws(iam_actions: Any) -> None:
    """SQS batch calls need the permission of their single call, as in AWS."""
    upstream = getattr(iam_actions, "extract_iam_action", None)
    if not callable(upstream):
        raise LauncherError("ministack's iam_actions.extract_iam_action is missing")
    target = {"x-amz-target": "AmazonSQS.SendMessageBatch", "content-type": "application/x-amz-json-1.0"}
    if upstream("sqs", "POST", "/", target, b"{}", {}) != "sqs:SendMessageBatch":
        raise LauncherError("ministack names SQS batch actions differently now: re-read iam_actions before pinning")

    def extract_iam_action(*args: Any, **kwargs: Any) -> str | None:
        action: str | None = upstream(*args, **kwargs)
        return BATCH_ACTIONS.get(action, action) if action else action

    iam_actions.extract_iam_action = extract_iam_action
    if iam_actions.extract_iam_action("sqs", "POST", "/", target, b"{}", {}) != "sqs:SendMessage":
        raise LauncherError("the batch action mapping did not take")


def known_key(iam: Any) -> Callable[[str], bool]:
    """Whether ministack has an access key (the root key, an IAM user's active key): asked before a body is read."""
    resolved = getattr(iam, "ResolvedCredential", None)
    if not isinstance(resolved, type):
        raise LauncherError("ministack's iam_evaluator.ResolvedCredential is missing: re-read it before pinning")

    def known(access_key_id: str) -> bool:
        return isinstance(iam.resolve_credential(access_key_id), resolved)

    return known


def check_known_keys(known: Callable[[str], bool], root_key: str) -> None:
    """The known-key check knows the root key and none of the keys upstream took for root, or the launcher exits."""
    if not known(root_key) or any(known(key) for key in (*WEAK_ROOT_KEYS, "")):
        raise LauncherError("the known-key check does not know the root key, or knows a key upstream took for root")


def check_patched(iam: Any, root_key: str) -> None:
    """The patched functions answer as they must, or the launcher exits."""
    for key in (*WEAK_ROOT_KEYS, "", "123456789012"):
        if iam.is_root_access_key(key) or iam._is_root_key(key):
            raise LauncherError(f"key {key!r} is still root after the patch")
    if not iam.is_root_access_key(root_key) or iam._is_root_key(root_key):
        raise LauncherError("the stack's root key is not root, or is root unchecked, after the patch")
    credential = iam.resolve_credential(root_key, "000000000000")
    if getattr(credential, "secret_access_key", None) != os.environ["AWS_SECRET_ACCESS_KEY"]:
        raise LauncherError("ministack does not check the root key against AWS_SECRET_ACCESS_KEY")


def body_seconds(env: MutableMapping[str, str], bound: float) -> float:
    """SQS_BODY_SECONDS when it is a number in (0, bound] (the tests wait less), else `bound`."""
    try:
        seconds = float(env.get("SQS_BODY_SECONDS", bound))
    except ValueError:
        raise LauncherError("SQS_BODY_SECONDS must be a number of seconds") from None
    if not 0 < seconds <= bound:
        raise LauncherError(f"SQS_BODY_SECONDS must be over 0 and at most {bound:g}")
    return seconds


def connection_cap() -> int:
    """MAX_CONNECTIONS, or half the open-file limit when that is lower (the rest for ministack's own files)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_CONNECTIONS, soft // 2))


def cap_connections(hypercorn_run: Any, limit: int) -> None:
    """Make hypercorn's asyncio server close a new connection at once while `limit` others are open."""
    upstream: Any = getattr(hypercorn_run, "TCPServer", None)
    worker_serve = getattr(hypercorn_run, "worker_serve", None)
    if not isinstance(upstream, type) or not callable(worker_serve):
        raise LauncherError("hypercorn.asyncio.run changed: re-read it before pinning")
    if "await TCPServer(" not in inspect.getsource(worker_serve):
        raise LauncherError("hypercorn's worker_serve no longer serves through TCPServer: re-read it before pinning")
    open_now = 0

    class CappedTCPServer(upstream):  # type: ignore[misc]
        """hypercorn's connection, closed unserved when `limit` are open."""

        async def run(self) -> None:
            nonlocal open_now
            if open_now >= limit:
                self.writer.close()
                return
            open_now += 1
            try:
                await super().run()
            finally:
                open_now -= 1

    hypercorn_run.TCPServer = CappedTCPServer


class OutOfFilesOncePerMinute(logging.Filter):
    """Lets one record of running out of file descriptors through a minute (asyncio logs one an accept)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record of EMFILE/ENFILE within a minute of the last one let through."""
        error = record.exc_info[1] if record.exc_info else None
        if not (isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE)):
            return True
        if time.monotonic() - self.last < 60:
            return False
        self.last = time.monotonic()
        return True


def refuse_http2(protocol_module: Any, closed_event: type) -> None:
    """Make hypercorn close, unserved, a connection that starts HTTP/2 (h2c prior knowledge or an Upgrade).

    One HTTP/2 connection carries 100 streams, so a connection cap counts a hundredth of the requests (attack 22,
    F1); no SQS client the stack ships speaks h2c.
    """
    wrapper = getattr(protocol_module, "ProtocolWrapper", None)
    if not isinstance(getattr(protocol_module, "H2Protocol", None), type) or not isinstance(wrapper, type):
        raise LauncherError("hypercorn.protocol changed: re-read it before pinning")
    if inspect.getsource(wrapper).count("H2Protocol(") != 3:
        raise LauncherError("hypercorn's ProtocolWrapper starts HTTP/2 elsewhere now: re-read it before pinning")

    class RefusedHttp2:
        """In HTTP/2's place: closes the connection at once and reads nothing more."""

        def __init__(self, *args: Any) -> None:
            self._send = args[8]  # (app, config, context, task_group, state, ssl, client, server, send)

        async def initiate(self, *_: Any) -> None:
            await self._send(closed_event())

        async def handle(self, _event: Any) -> None:
            return None

    protocol_module.H2Protocol = RefusedHttp2


TRANSPORT_READ_BYTES = 16 * 1024
"""What the event loop reads from a socket at once (asyncio's default is 256 KiB)."""


def read_in_small_pieces(selector_events: Any) -> None:
    """Make asyncio's socket transports read TRANSPORT_READ_BYTES at a time (review 22, R22-1).

    A read happens for every readable socket in a loop iteration, before the app has seen the request's
    headers; with the stream's own pause at 2 x 64 KiB, a connection then holds ~0.2 MiB at most, not ~0.5.
    """
    transport = getattr(selector_events, "_SelectorSocketTransport", None)
    if not isinstance(getattr(transport, "max_size", None), int):
        raise LauncherError("asyncio's _SelectorSocketTransport.max_size is gone: re-read selector_events")
    transport.max_size = TRANSPORT_READ_BYTES  # type: ignore[union-attr]


def refuse_admin_paths(app: App) -> App:
    """`app` with every `/_…` path but the health checks answered 403 (they need no credentials upstream)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and path.startswith("/_") and path not in HEALTH_PATHS:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"refused: admin endpoints are off\n"})
            return
        await app(scope, receive, send)

    return guarded


def load_request_check() -> Any:
    """sqs_request_check.py beside this file: by its path, the launcher's directory is not on the import path (-P)."""
    path = Path(__file__).resolve().with_name("sqs_request_check.py")
    spec = importlib.util.spec_from_file_location("sqs_request_check", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise LauncherError(f"{path} is missing: it decides which requests are served")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def check_request_check(check: Any, router: Any, iam_actions: Any, root_key: str) -> None:
    """The check serves what boto3 sends only, and ministack reads a served SQS call as its handler runs it."""
    if misjudged := check.misjudged(root_key):
        raise LauncherError(f"the request check misjudges {misjudged}")
    sqs_call = {name.decode(): value.decode() for name, value in check.signed_headers("AKIA0", "sqs")}
    sqs_call |= {"x-amz-target": "AmazonSQS.ReceiveMessage", "content-type": check.JSON_TYPE}
    body = json.dumps({"QueueUrl": "http://localstack:4566/000000000000/login-queue"}).encode()
    read = (
        router.detect_service("POST", "/", sqs_call, {}),
        iam_actions.extract_iam_action("sqs", "POST", "/", sqs_call, body, {}),
        iam_actions.extract_resource_arn("sqs", "POST", "/", sqs_call, body, {}, "us-east-1", "000000000000"),
    )
    if read != ("sqs", "sqs:ReceiveMessage", "arn:aws:sqs:us-east-1:000000000000:login-queue"):
        raise LauncherError(f"ministack reads a served SQS call as {read}: re-read iam_actions before pinning")
    iam_call = {name.decode(): value.decode() for name, value in check.signed_headers("AKIA0", "iam")}
    if router.detect_service("POST", "/", iam_call | {"content-type": check.FORM_TYPES[0]}, {}) != "iam":
        raise LauncherError("ministack no longer routes a form call signed for iam to IAM")


def main() -> None:
    """Check, patch and serve; exits 2 when authentication cannot be vouched for."""
    parser = argparse.ArgumentParser(description="ministack (SQS, IAM) with authentication and no root bypass")
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    args = parser.parse_args()
    root_key, _ = root_credentials(os.environ)
    body_deadline = body_seconds(os.environ, BODY_SECONDS)
    installed, pinned = metadata.version("ministack"), pinned_version()
    if installed != pinned:
        raise LauncherError(f"ministack {installed} is installed, the patches are for {pinned}")
    os.environ["AUTH"] = "true"  # read by ministack.app at import
    os.environ["SERVICES"] = "sqs,iam"
    import hypercorn.protocol as hypercorn_protocol
    from hypercorn.asyncio import run as hypercorn_run
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from hypercorn.events import Closed
    from ministack import app as ministack_app
    from ministack.core import iam_actions, iam_evaluator, router
    from ministack.services import sts

    if ministack_app.AUTH is not True:
        raise LauncherError("ministack did not turn AUTH on")
    close_root_bypass(iam_evaluator, sts, root_key)
    check_patched(iam_evaluator, root_key)
    authorize_batches_as_aws(iam_actions)
    request_check = load_request_check()
    check_request_check(request_check, router, iam_actions, root_key)
    known = known_key(iam_evaluator)
    check_known_keys(known, root_key)
    served = request_check.refuse_unclear_requests(ministack_app.app, root_key, HEALTH_PATHS, body_deadline, known)
    refuse_http2(hypercorn_protocol, Closed)
    read_in_small_pieces(asyncio.selector_events)
    cap = connection_cap()
    cap_connections(hypercorn_run, cap)
    logging.getLogger("asyncio").addFilter(OutOfFilesOncePerMinute())
    config = Config()
    config.bind = [args.bind]
    config.keep_alive_timeout = 75
    config.read_timeout = READ_SECONDS
    config.loglevel = os.environ.get("LOG_LEVEL", "WARNING").upper()
    print(
        f"sqs_auth_launcher: ministack {installed}, AUTH on, root bypass closed, batches as AWS,"
        f" unclear requests refused, bodies within {body_deadline:g} s and"
        f" {request_check.MAX_BUFFERED_BYTES // 2**20} MiB in all, HTTP/1.1 only, at most {cap} connections,"
        f" on {args.bind}",
        flush=True,
    )
    asyncio.run(serve(refuse_admin_paths(served), config))


if __name__ == "__main__":
    try:
        main()
    except LauncherError as error:
        print(f"sqs_auth_launcher: REFUSING TO START: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
