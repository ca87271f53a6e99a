"""An SQS identity that may not delete from the source queue stops the ETL as a misconfiguration.

Chaos 49, C49-7: the ETL's batch delete took every error for a passing failure ("redelivery will skip them as
duplicates"): with sqs:DeleteMessage refused by the identity's IAM policy each batch was loaded, left in the queue,
received again and deleted in vain again, every receive spending a count, until SQS's redrive moved the loaded
events to the DLQ in clear - and the ETL never said it could not delete. A refused delete is a misconfiguration
now: the drain stops, raising it, and releases what it holds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.events import send_events
from devstack.procs import stop_pid
from devstack.sqs import SqsEndpoint, sqs_client, start_sqs
from devstack.sqs_identities import SqsKey, iam_client, policy_document, root_key
from etl_service.errors import Misconfigured
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import events, where_each_event_landed


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[SqsEndpoint, SqsKey]]:
    made: list[SqsKey] = []

    def captured() -> SqsKey:
        made.append(root_key())
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("devstack.sqs.root_key", captured)
        sqs = start_sqs(tmp_path / "ministack.log", authenticated=True)
    try:
        yield sqs, made[0]
    finally:
        stop_pid(sqs.pid)


def key_without_delete(endpoint: str, root: SqsKey) -> SqsKey:
    """A user under the ETL's shipped policy but for sqs:DeleteMessage on the source queue."""
    policy = json.loads(policy_document("tokenvault-etl-sqs-policy.json"))
    source = policy["Statement"][0]
    source["Action"] = [a for a in source["Action"] if a != "sqs:DeleteMessage"]
    iam = iam_client(endpoint, root)
    iam.create_user(UserName="chaos49-etl-without-delete")
    iam.put_user_policy(
        UserName="chaos49-etl-without-delete", PolicyName="etl-without-delete", PolicyDocument=json.dumps(policy)
    )
    made = iam.create_access_key(UserName="chaos49-etl-without-delete")["AccessKey"]
    return SqsKey(made["AccessKeyId"], made["SecretAccessKey"])


def test_a_refused_delete_stops_the_drain_as_a_misconfiguration_and_releases_what_it_holds(
    stack_env: dict[str, str], vault: RunningVault, emulator: tuple[SqsEndpoint, SqsKey]
) -> None:
    sqs, root = emulator
    key = key_without_delete(sqs.endpoint_url, root)
    sent = events(40, malformed_rate=0)
    send_events(sqs_client(sqs.endpoint_url, sqs.keys["producer"]), sqs.queue_url, sent)
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=2),
        "ETL_QUEUE_URL": sqs.queue_url,
        "ETL_DLQ_URL": sqs.dlq_url,
        "ETL_SQS_ENDPOINT_URL": sqs.endpoint_url,
        **key.env(),
    }
    outcome: list[BaseException | object] = []
    with etl_consumer(etl_env) as etl:

        def drain() -> None:
            try:
                outcome.append(etl.wired.consumer.drain())
            except BaseException as error:  # the test reads what ended the drain
                outcome.append(error)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        thread.join(40)
        if thread.is_alive():
            etl.wired.consumer.stop()
            thread.join(60)
            pytest.fail("the drain went on for 40 s without being able to delete a message")
    assert isinstance(outcome[0], Misconfigured), outcome
    assert "delete" in str(outcome[0]) and "AccessDenied" in str(outcome[0])
    rows, _ = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert len(rows) == len(set(rows))  # loaded before the delete, once
