"""A genuine dead letter longer than this ETL writes, within what SQS carries, is proven (review 15, finding 6).

Claims were bounded by the longest envelope *this* ETL writes (256 KiB less a 6 KiB reserve for
the attributes). An earlier ETL, whose ETL_MAX_BODY_BYTES could be up to 262,144, sealed longer
genuine letters that still fitted one SQS message: such a letter was no longer proven, so a
drain's take-back moved it to the source queue, where it was refused as too large and its sealed
body (the only copy of the event) was lost. Claims are now bounded by what SQS carries at all;
the 4 MiB request chunks keep large forged claims from stalling a drain
(tests/integration/test_dead_letter_proof_size.py).

Real OpenBao (the ETL's AppRole), ministack SQS, Postgres and the vault. The sealed body is a
synthetic event of TEST-NET values; checks are reduced to booleans before they are asserted.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from devstack.sqs import sqs_client
from etl_service.adapters import transit_sealer
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.entrypoints.cli import EXIT_OK, drain_status
from etl_service.service.sealing import MAX_ENVELOPE_BYTES, SQS_MAX_MESSAGE_BYTES
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters
from tests.integration.etl_landings import drained_within
from tests.integration.forged_letters import person
from tests.malformed_samples import body

OLDER_BODY_BYTES = 193_000
"""A refused body an earlier ETL sealed with ETL_MAX_BODY_BYTES=250000: today's bound is 191,879."""


def sealer(stack_env: dict[str, str]) -> TransitSealer:
    return TransitSealer(
        stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
    )


def sealed_by_an_earlier_etl(stack_env: dict[str, str], text: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The envelope an earlier ETL, which sealed bodies up to 250,000 bytes, wrote for `text`."""
    with monkeypatch.context() as patch:
        patch.setattr(transit_sealer, "largest_sealable_body_bytes", lambda _key: 250_000)
        [envelope] = sealer(stack_env).seal([text])
    return envelope


def older_event(tag: str) -> str:
    """A synthetic event padded to OLDER_BODY_BYTES (a long user agent: refused as too large by the ETL)."""
    short = body(**person(tag))
    padded = {**json.loads(short), "user_agent": "x"}
    padding = OLDER_BODY_BYTES - len(json.dumps(padded))
    return json.dumps({**padded, "user_agent": "x" * (1 + padding)})


def test_a_genuine_claim_longer_than_this_etl_writes_is_proven_by_openbao(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    envelope = sealed_by_an_earlier_etl(stack_env, older_event(uuid.uuid4().hex[:8]), monkeypatch)
    claim = json.loads(envelope)["sealed_body"]
    assert MAX_ENVELOPE_BYTES < len(envelope) <= SQS_MAX_MESSAGE_BYTES - 1024
    assert sealer(stack_env).authentic([claim]) == frozenset({claim})


def test_a_drain_keeps_such_a_letter_in_the_dlq_with_its_sealed_body(
    stack_env: dict[str, str], vault: RunningVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    envelope = sealed_by_an_earlier_etl(stack_env, older_event(tag), monkeypatch)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    sqs_client(endpoint).send_message(  # as the earlier ETL sent it (adapters/sqs.py dead_letter)
        QueueUrl=env["ETL_DLQ_URL"],
        MessageBody=envelope,
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": "body_too_large"},
            "reason_detail": {"DataType": "String", "StringValue": "over ETL_MAX_BODY_BYTES"},
            "event_id": {"DataType": "String", "StringValue": f"{tag}-older"},
        },
    )

    with etl_consumer(env) as etl:
        summary = drained_within(etl, 60)
    assert drain_status(summary) == EXIT_OK
    assert (summary.taken_back_from_dlq, summary.quarantined) == (0, 0)
    [left] = all_dead_letters(endpoint, env["ETL_DLQ_URL"])
    sealed_body_kept = left["Body"] == envelope
    assert sealed_body_kept, "the older genuine letter was taken back and its sealed body lost"
