"""`dead-letters list` over a DLQ larger than one listing says it was cut short and exits 3.

A listing reads at most LISTING_LIMIT (10,000) letters within its 60 s lease (a drain's take-back
and `redrive` say so when it stops short); `list` printed 10,000 letters and exited 0 as if that
were the DLQ. Real SQS (ministack), the command in-process (`dead-letters` main, as `python -m
etl_service dead-letters list` runs it) with a listing limit of LIMIT, so that one letter more than
a listing reads takes seconds to send and list, not the ~30 s of 10,001 (as the erase sweep's tests
shrink its page). Whether the limit or, on a slow machine, the lease ends the listing, it is cut
short; no letter is changed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devstack.sqs import create_queues, sqs_client
from devstack.stack import etl_service_env
from etl_service.adapters.dead_letter_queue import DeadLetterQueue
from etl_service.entrypoints import dead_letters

INCOMPLETE = 3
LIMIT = 50
"""The letters one listing reads here (LISTING_LIMIT, 10,000, in the command as shipped)."""


def test_list_over_more_letters_than_one_listing_reads_says_it_was_cut_short_and_exits_3(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(DeadLetterQueue.list, "__defaults__", (LIMIT,))  # `list` lists with the default limit
    queue_url, dlq_url = create_queues(stack_env["SQS_ENDPOINT_URL"], name=f"q-{uuid.uuid4().hex[:12]}")
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    reason: dict[str, Any] = {"reason": {"DataType": "String", "StringValue": "not_json"}}
    for start in range(0, LIMIT + 1, 10):
        entries = range(start, min(start + 10, LIMIT + 1))
        sqs.send_message_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": str(i), "MessageBody": "{}", "MessageAttributes": reason} for i in entries],
        )
    settings = {**etl_service_env(stack_env), "ETL_QUEUE_URL": queue_url, "ETL_DLQ_URL": dlq_url, "VAULT_TOKEN": ""}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)

    code = dead_letters.main(["list"])

    out, err = capsys.readouterr()
    assert code == INCOMPLETE, err[-2000:]  # it exited 0
    assert "etl_service dead-letters list: the listing was cut short (" in err
    assert "may not be the whole DLQ" in err and "Nothing was changed" in err
    shown = int(out.splitlines()[-1].removesuffix(" dead letter(s)"))
    assert 0 < shown <= LIMIT
