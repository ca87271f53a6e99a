"""The set-up of the tests that count how often the envelope reader parses each DLQ body.

Shared by the "reads each body once" tests (dead-letters erase, a drain's take-back): a fresh
queue and DLQ on the stack's SQS (ministack), the ETL's DLQ sealer on OpenBao, and the JSON
parses of sealing.read_dead_letter_body counted per text, by replacing the `json` it uses.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from devstack.sqs import create_queues, sqs_client
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.service import sealing

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

WRONG_TYPE: dict[str, Any] = {"reason": {"DataType": "String", "StringValue": "wrong_type"}}
"""The message attributes of a letter the ETL dead-lettered for a wrong type."""


class CountedJson:
    """The `json` the envelope reader uses, counting what it parses."""

    def __init__(self) -> None:
        self.parsed: Counter[str] = Counter()

    def loads(self, text: str) -> Any:
        """json.loads, counted under `text`."""
        self.parsed[text] += 1
        return json.loads(text)

    def dumps(self, value: Any) -> str:
        """json.dumps, not counted."""
        return json.dumps(value)


class FreshQueues(NamedTuple):
    """A queue and its DLQ of the test's own, named after `tag`, and the SQS client to reach them."""

    tag: str
    queue_url: str
    dlq_url: str
    sqs: SQSClient


def fresh_queues(env: dict[str, str]) -> FreshQueues:
    """A new queue and DLQ on the stack's SQS, under a random tag the test's values can carry too."""
    tag = uuid.uuid4().hex[:8]
    queue_url, dlq_url = create_queues(env["SQS_ENDPOINT_URL"], name=f"q-{tag}")
    return FreshQueues(tag, queue_url, dlq_url, sqs_client(env["SQS_ENDPOINT_URL"]))


def dlq_sealer(env: dict[str, str]) -> TransitSealer:
    """The ETL's DLQ sealer on the stack's OpenBao (its AppRole login)."""
    return TransitSealer(env["VAULT_ADDR"], env["DLQ_SEAL_ROLE_ID"], Path(env["DLQ_SEAL_SECRET_ID_FILE"]))


def count_envelope_parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """From now on, how many times the envelope reader parses each text (for the rest of the test)."""
    counted = CountedJson()
    monkeypatch.setattr(sealing, "json", counted)
    return counted.parsed
