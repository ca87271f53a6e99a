"""Large forged claims neither stall a drain nor a source batch (attack 14, finding 2).

OpenBao refuses a request body over its max_request_size (32 MiB by default) with HTTP 413, as a
whole. A claim may be as long as an SQS message allows (~253 kB of base64 has a ciphertext's
shape), so ~130 of them in one Transit rewrap failed every claim with them: a take-back failed on
every drain check (swallowed: the drain never ended, a reasonless original beside them was never
taken back), and a source batch of ETL_BATCH_SIZE >= ~130 was postponed on every receive, its
genuine events with it. Batch requests are now bounded by bytes as well as by count.

Real OpenBao, ministack SQS, Postgres and the vault. The claims are base64 of random bytes; the
people are synthetic TEST-NET values, each check reduced to a boolean before it is asserted.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg

from devstack.sqs import sqs_client
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.entrypoints.cli import EXIT_OK, drain_status
from etl_service.service.sealing import NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters
from tests.integration.etl_landings import drained_within
from tests.integration.forged_letters import clear_in, person
from tests.malformed_samples import body

KEY = "tokenvault-dead-letters"
FORGED = 140
"""140 claims of ~253 kB: ~35 MB, over OpenBao's 32 MiB request limit in one request."""
CLAIM_BYTES = 190_000
"""Random bytes under each claim: ~253 kB of base64, an envelope under SQS's 256 KiB."""


def large_claim() -> str:
    return "vault:v1:" + base64.b64encode(os.urandom(CLAIM_BYTES)).decode()


def forged_envelope() -> str:
    return dead_letter_body(large_claim(), None, KEY)


def send(sqs: Any, queue_url: str, text: str, attributes: dict[str, str]) -> None:
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=text,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def loaded(dsn: str, event_ids: list[str]) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT event_id FROM user_logins WHERE event_id = ANY(%s)", (event_ids,)).fetchall()
    return sorted(r[0] for r in rows)


def refused_as_too_large(letters: list[dict[str, Any]]) -> bool:
    """Each letter a not-kept envelope with the reason body_too_large."""
    not_kept = dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)
    return all(
        m["Body"] == not_kept and m["MessageAttributes"]["reason"]["StringValue"] == "body_too_large" for m in letters
    )


def test_the_sealer_proves_a_genuine_claim_among_large_forged_ones_and_seals_large_batches(
    stack_env: dict[str, str],
) -> None:
    sealer = TransitSealer(
        stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
    )
    [envelope] = sealer.seal(['{"user_id": "proof-size"}'])
    genuine = json.loads(envelope)["sealed_body"]
    assert sealer.authentic([genuine, *(large_claim() for _ in range(FORGED))]) == frozenset({genuine})

    bodies = [base64.b64encode(os.urandom(CLAIM_BYTES * 3 // 4)).decode() for _ in range(FORGED)]
    sealed = [json.loads(e)["sealed_body"] for e in sealer.seal(bodies)]  # ~35 MB of base64 to encrypt
    assert all(isinstance(s, str) for s in sealed) and len(set(sealed)) == FORGED
    assert sealer.authentic(sealed[:3]) == frozenset(sealed[:3])


def test_a_drain_takes_back_an_original_beside_large_forged_claims_and_ends(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    victim = person(f"{tag}v")
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    dlq_url = env["ETL_DLQ_URL"]
    for _ in range(FORGED):  # anyone who may send to the DLQ
        send(sqs, dlq_url, forged_envelope(), {"reason": "not_json"})
    send(sqs, dlq_url, body(**victim), {"event_id": f"{tag}-victim"})  # an original, as SQS's redrive moves it

    with etl_consumer(env) as etl:
        summary = drained_within(etl, 60)
    assert drain_status(summary) == EXIT_OK
    assert (summary.taken_back_from_dlq, summary.loaded, summary.quarantined) == (FORGED + 1, 1, FORGED)
    assert loaded(stack_env["PG_ADMIN_DSN"], [f"{tag}-victim"]) == [f"{tag}-victim"]
    left = all_dead_letters(endpoint, dlq_url)
    assert len(left) == FORGED and refused_as_too_large(left)
    assert clear_in(left, victim) == [], "the original's values stayed in the DLQ in clear"


def test_a_large_source_batch_of_forged_claims_loads_the_genuine_events_beside_them(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = {
        **etl_harness_env(stack_env, vault.address),
        "ETL_BATCH_SIZE": "300",  # docs/production.md measures 1000
        "ETL_MAX_BATCH_AGE_SECONDS": "5",  # every message in one batch
    }
    queue_url, dlq_url = env["ETL_QUEUE_URL"], env["ETL_DLQ_URL"]
    genuine = [f"{tag}-genuine-{i}" for i in range(3)]
    for event_id in genuine:
        send(sqs, queue_url, body(**person(event_id)), {"event_id": event_id})
    for _ in range(FORGED):  # a producer alone, without attributes
        send(sqs, queue_url, forged_envelope(), {})

    with etl_consumer(env) as etl:
        summary = drained_within(etl, 60)
    assert drain_status(summary) == EXIT_OK
    assert (summary.loaded, summary.quarantined, summary.taken_back_from_dlq) == (3, FORGED, 0)
    assert loaded(stack_env["PG_ADMIN_DSN"], genuine) == genuine
    left = all_dead_letters(endpoint, dlq_url)
    assert len(left) == FORGED and refused_as_too_large(left)
