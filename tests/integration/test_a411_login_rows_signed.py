"""The ETL signs the rows it loads; a refused signature loads nothing and loses nothing (attack 41, A41-1).

The database owner could re-point rows of user_logins (two people's tokens swapped) and the privacy officer's
erasure of one destroyed the other's values. The ETL now signs, per load batch, the list of its rows' digests with
a Transit ed25519 key of its own (tokenvault-login-rows) and writes the list in the rows' transaction; the officer's
`erase` verifies the rows offline (tests/cli/test_a411_erase_verifies_rows.py). Here, against the session's real
OpenBao, SQS and PostgreSQL and the in-process vault:
- every row the ETL loads names a list whose signature verifies with the public keys the stack wrote, and lists
  the row as it is; the officer's count (`count_reach` with verification) finds none failing, none unsigned;
- with the ETL's policy no longer allowing `transit/sign` on the key (a policy rolled back, a key renamed), the
  batch is not loaded: the run stops on the misconfiguration naming transit/sign, each message is released to its
  queue (nothing dead-lettered, nothing lost), and once the policy is back the same messages load, signed.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from devstack.events import generate_events, send_events
from devstack.sqs import sqs_client
from etl_service.errors import Misconfigured
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import dead_letters, where_each_event_landed
from tokenvault_cli.erase_reach import count_reach
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY, PublicKeys, digests_of, row_digest, signed_input

SIGN_RULE = f'path "transit/sign/{LOGIN_ROWS_KEY}" {{\n  capabilities = ["update"]\n}}\n'


def _visible(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.timeout(90)
def test_a411_rows_are_signed_per_batch_and_a_refused_sign_loads_nothing_and_loses_nothing(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    started = time.monotonic()
    sent = list(generate_events(12, seed=uuid.uuid4().int % 2**32, malformed_rate=0))
    ids = [e.event_id for e in sent]
    env = etl_harness_env(stack_env, vault.address, visibility_timeout=30, max_receive_count=5)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    policy = root.sys.read_policy("tokenvault-etl")["data"]["rules"]
    assert SIGN_RULE in policy  # config/vault/tokenvault-etl.hcl, as the stack writes it

    with etl_consumer(env) as etl:
        etl.wired.check_dependencies()  # the start check signs a probe: passes with the shipped policy
        root.sys.create_or_update_policy("tokenvault-etl", policy.replace(SIGN_RULE, ""))
        try:
            send_events(sqs, etl.queue_url, sent)
            with pytest.raises(Misconfigured, match=f"transit/sign.*{LOGIN_ROWS_KEY}|{LOGIN_ROWS_KEY}.*transit/sign"):
                etl.wired.consumer.drain()
        finally:
            root.sys.create_or_update_policy("tokenvault-etl", policy)
    rows, quarantined = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert (rows, quarantined) == ([], [])  # nothing loaded unsigned, nothing quarantined
    assert dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"]) == []
    assert _visible(sqs, env["ETL_QUEUE_URL"]) == len(sent)  # released: every message still in its queue

    with etl_consumer(env) as etl:  # the policy back: the same messages load, signed
        etl.wired.consumer.drain()
    rows, _ = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert sorted(rows) == sorted(ids)

    keys = PublicKeys.parse(Path(stack_env["LOGIN_ROW_KEYS_FILE"]).read_text())
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        loaded = conn.execute(
            "SELECT l.event_id, l.user_id, l.masked_ip, l.masked_device_id, l.create_date, m.manifest_id, m.digests,"
            " m.signature FROM user_logins l JOIN user_login_manifests m ON m.manifest_id = l.row_manifest"
            " WHERE l.event_id = ANY(%s)",
            (ids,),
        ).fetchall()
    assert len(loaded) == len(sent)
    for event_id, user_id, ip_token, device_token, created, manifest_id, digests, signature in loaded:
        assert keys.verify(signature, signed_input(manifest_id, digests))
        assert row_digest(event_id, user_id, ip_token, device_token, created) in digests_of(digests)
    tokens = sorted({str(r[2]) for r in loaded} | {str(r[3]) for r in loaded})
    check = count_reach(stack_env["PG_ANALYST_DSN"], tokens, [], lambda: keys).check
    assert check is not None and (check.failing, check.unsigned, check.too_many) == (0, 0, False)
    assert check.rows >= len(sent)
    print(
        f"\nA41-1 ETL: {len(sent)} rows signed in {len({r[5] for r in loaded})} list(s);"
        f" {time.monotonic() - started:.1f} s"
    )
