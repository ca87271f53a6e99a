"""`dead-letters erase` sweeps a DLQ in bounded pages, and its hold on what it checked outlasts the sweep.

Review 12, finding 5: erase listed on while a listing was cut short, each round holding up to
10,000 more letters for its --wait + 600 s from that round: over a huge DLQ the first rounds'
letters came visible again before the sweep ended (listed and counted twice), and past SQS's
~120,000 in-flight limit a receive fails (ministack does not enforce it). Now a sweep keeps at
most MAX_HELD_LETTERS in flight, lists PAGE_LETTERS at a time, and renews the hold of what it
still holds (DeadLetterSweep.keep_held). Real SQS (ministack) and OpenBao (the ETL's sealer, the
operator's decrypts), the sweep in-process with a small page, bound and hold, so a DLQ larger
than one page stays fast. Synthetic values only.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.sqs import create_queues, sqs_client
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.transit_sealer import DEAD_LETTER_KEY, TransitSealer, open_sealed
from etl_service.entrypoints import dead_letter_erasure_sweep
from etl_service.entrypoints.dead_letter_erasure import run_erase


class WatchedSqs:
    """The real SQS client, noting every message a receive returned and the DLQ's in-flight count after it."""

    def __init__(self, endpoint: str, dlq_url: str) -> None:
        self._client = sqs_client(endpoint)
        self._dlq_url = dlq_url
        self.received: list[str] = []
        self.in_flight: list[int] = []

    def receive_message(self, **call: Any) -> Any:
        answer = self._client.receive_message(**call)
        self.received += [m["MessageId"] for m in answer.get("Messages", [])]
        attributes = self._client.get_queue_attributes(
            QueueUrl=self._dlq_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        self.in_flight.append(int(attributes["ApproximateNumberOfMessagesNotVisible"]))
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def dlq_of(stack_env: dict[str, str], bodies: list[str]) -> tuple[str, str]:
    """New queues whose DLQ holds `bodies`, each with a reason, as the ETL dead-letters them."""
    queue_url, dlq_url = create_queues(stack_env["SQS_ENDPOINT_URL"], name=f"q-{uuid.uuid4().hex[:12]}")
    reason: dict[str, Any] = {"reason": {"DataType": "String", "StringValue": "wrong_type"}}
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "MessageBody": b, "MessageAttributes": reason}
                for i, b in enumerate(bodies[start : start + 10])
            ],
        )
    return queue_url, dlq_url


def sealed(stack_env: dict[str, str], count: int, tag: str) -> list[str]:
    """`count` envelopes sealed by the ETL's sealer (OpenBao Transit), of people other than the erased one."""
    sealer = TransitSealer(
        stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
    )
    return sealer.seal([json.dumps({"user_id": f"other-{tag}-{i}"}) for i in range(count)])


def erase(
    monkeypatch: pytest.MonkeyPatch,
    client: WatchedSqs,
    urls: tuple[str, str],
    tag: str,
    decrypt: Callable[[str], str],
) -> int:
    """`dead-letters erase - --yes --wait 0` as main runs it, over `client`."""
    monkeypatch.setattr("sys.stdin", io.StringIO(f"user_id=erased-{tag}\n"))
    dlq = DeadLetterSweep(client, *urls)  # type: ignore[arg-type]
    try:
        return run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, DEAD_LETTER_KEY, decrypt)
    finally:
        dlq.release()


def operator_decrypt(stack_env: dict[str, str], seconds: float = 0.0) -> Callable[[str], str]:
    """Open a sealed body as the DLQ operator, taking at least `seconds` (a slow OpenBao)."""
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()

    def decrypt(ciphertext: str) -> str:
        time.sleep(seconds)
        return open_sealed(stack_env["VAULT_ADDR"], token, DEAD_LETTER_KEY, ciphertext)

    return decrypt


def test_a_sweep_never_holds_more_than_its_bound_and_says_the_dlq_was_not_swept_whole(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dead_letter_erasure_sweep, "PAGE_LETTERS", 10)
    monkeypatch.setattr(dead_letter_erasure_sweep, "MAX_HELD_LETTERS", 20)
    tag = uuid.uuid4().hex[:8]
    clear = [json.dumps({"user_id": f"other-{tag}-clear-{i}"}) for i in range(20)]
    urls = dlq_of(stack_env, [*sealed(stack_env, 5, tag), *clear])  # 25 letters: more than the bound
    client = WatchedSqs(stack_env["SQS_ENDPOINT_URL"], urls[1])

    exit_code = erase(monkeypatch, client, urls, tag, operator_decrypt(stack_env))

    out, err = capsys.readouterr()
    assert max(client.in_flight) == 20  # a listing held all 25 at once (the bound: SQS's ~120,000)
    assert exit_code == 3, err
    assert "dead letters checked: 20" in out and "deleted: 0" in out
    assert "as many as a sweep keeps at once" in err and "may not have been examined" in err
    assert len(client.received) == len(set(client.received)) == 20


def test_a_sweep_renews_its_hold_so_no_letter_it_checked_comes_back_while_it_lists_on(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dead_letter_erasure_sweep, "PAGE_LETTERS", 5)
    monkeypatch.setattr(dead_letter_erasure_sweep, "HOLD_MARGIN_SECONDS", 4)  # --wait 0: each letter held 4 s
    tag = uuid.uuid4().hex[:8]
    person = json.dumps({"user_id": f"erased-{tag}"})
    urls = dlq_of(stack_env, [*sealed(stack_env, 11, tag), person])
    client = WatchedSqs(stack_env["SQS_ENDPOINT_URL"], urls[1])

    exit_code = erase(monkeypatch, client, urls, tag, operator_decrypt(stack_env, seconds=0.5))  # 5.5 s of opening

    out, err = capsys.readouterr()
    assert exit_code == 0, err
    assert "dead letters checked: 12" in out and "deleted: 1" in out
    assert len(client.received) == len(set(client.received)) == 12  # the first page came back, listed again
