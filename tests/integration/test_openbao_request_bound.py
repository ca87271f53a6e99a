"""OpenBao refuses a request body over its listener's bound unread; the ETL's largest batches fit (attack 22, F2).

OpenBao reads and decodes a request's JSON before it checks the token: under its 32 MiB default an
anonymous 30 MB request cost the embedded stack's OpenBao ~250 MB, and ten at once took a 1 GiB
server, whose in-memory keys went with it. The embedded stack's listener is bounded at
devstack.openbao.MAX_REQUEST_BYTES (2 MiB), as compose's is (deploy/compose/vault-server.hcl).

The session's real OpenBao; no token; synthetic bodies only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

from devstack.openbao import MAX_REQUEST_BYTES
from devstack.stack import StackState
from etl_service.adapters.transit_batches import MAX_BATCH
from etl_service.adapters.transit_batches import MAX_REQUEST_BYTES as BATCH_BYTES
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.domain.resent_times import tag_input
from etl_service.service.sealing import SQS_MAX_MESSAGE_BYTES

AT_ONCE = 4
OVER = MAX_REQUEST_BYTES + 4 * 1024 * 1024
"""Each anonymous body: 4 MiB over the bound (under OpenBao's default 32 MiB)."""
GROWTH_MB = 50


def openbao_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) // 1024


def anonymous_post(address: str, body: bytes, answers: list[str]) -> None:
    """POST `body` to Transit with no token; the status code answered, or `closed` if the server hung up first."""
    host, port = address.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = f"POST /v1/transit/encrypt/tokenvault HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        with contextlib.suppress(OSError):  # refused while sending: its answer may still be there to read
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            answers.append(sock.recv(64).split(b" ")[1].decode())
        except (OSError, IndexError):
            answers.append("closed")


def test_anonymous_requests_over_the_bound_are_refused_before_openbao_decodes_them(stack_env: dict[str, str]) -> None:
    pid = StackState.load(Path(stack_env["STACK_DIR"]) / "state.json").pids["openbao"]
    body = b'{"plaintext":"' + b"A" * (OVER - 16) + b'"}'
    answers: list[str] = []
    senders = [
        threading.Thread(target=anonymous_post, args=(stack_env["VAULT_ADDR"], body, answers)) for _ in range(AT_ONCE)
    ]
    before = peak = openbao_rss_mb(pid)
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders):
        peak = max(peak, openbao_rss_mb(pid))
        time.sleep(0.01)
    assert set(answers) <= {"413", "closed"} and "413" in answers, answers  # never read to the token check (403)
    assert peak - before < GROWTH_MB, f"OpenBao's RSS grew by {peak - before} MB for {AT_ONCE} refused requests"


def test_the_etl_s_largest_transit_batches_are_served_under_the_bound(stack_env: dict[str, str]) -> None:
    sealer = TransitSealer(
        stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
    )
    body_bytes = BATCH_BYTES // MAX_BATCH * 3 // 4 - 16  # base64'd: MAX_BATCH of them fill a request
    envelopes = sealer.seal(["b" * body_bytes] * (2 * MAX_BATCH + 1))
    sealed = [json.loads(envelope)["sealed_body"] for envelope in envelopes]
    assert all(sealed) and sealer.authentic(sealed) == frozenset(sealed)
    # A single item over the batches' byte budget goes alone: a tag input whose event id fills an SQS message.
    astral = "\U0001f600" * (SQS_MAX_MESSAGE_BYTES // 4)
    forged = "vault:v1:" + "A" * 43 + "="
    assert sealer.verify_tags([(tag_input("m" * 200, astral, 1, "b"), forged)] * 2) == [False, False]
