"""`dead-letters list` over a DLQ larger than one listing says it was cut short and exits 3.

A listing reads at most 10,000 letters within its 60 s lease (a drain's take-back and `redrive`
say so when it stops short); `list` printed 10,000 letters and exited 0 as if that were the DLQ.
Real SQS (ministack): 10,001 dead letters on new queues. Whether the limit or, on a slow machine,
the lease ends the listing, it is cut short; no letter is changed.
"""

from __future__ import annotations

import uuid
from typing import Any

from devstack.sqs import create_queues, sqs_client
from devstack.stack import etl_service_env
from etl_service.adapters.dead_letter_queue import LISTING_LIMIT
from tests.integration.dead_letters import run_dead_letters

INCOMPLETE = 3


def test_list_over_more_letters_than_one_listing_reads_says_it_was_cut_short_and_exits_3(
    stack_env: dict[str, str],
) -> None:
    queue_url, dlq_url = create_queues(stack_env["SQS_ENDPOINT_URL"], name=f"q-{uuid.uuid4().hex[:12]}")
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    reason: dict[str, Any] = {"reason": {"DataType": "String", "StringValue": "not_json"}}
    for start in range(0, LISTING_LIMIT + 1, 10):
        entries = range(start, min(start + 10, LISTING_LIMIT + 1))
        sqs.send_message_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": str(i), "MessageBody": "{}", "MessageAttributes": reason} for i in entries],
        )

    listing = run_dead_letters(
        {**etl_service_env(stack_env), "ETL_QUEUE_URL": queue_url, "ETL_DLQ_URL": dlq_url}, "list"
    )

    assert listing.returncode == INCOMPLETE, listing.stderr[-2000:]  # it exited 0
    assert "etl_service dead-letters list: the listing was cut short (" in listing.stderr
    assert "may not be the whole DLQ" in listing.stderr and "Nothing was changed" in listing.stderr
    shown = int(listing.stdout.splitlines()[-1].removesuffix(" dead letter(s)"))
    assert 0 < shown <= LISTING_LIMIT
