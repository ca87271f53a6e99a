"""A load whose COMMIT committed but whose answer was lost, on the messages' last receive: loaded, not dead-lettered.

Chaos 49, C49-2: the lost answer is a DependencyDown of the database, so on a last receive the batch's events were
sealed and dead-lettered as `dependency_unavailable` with a quarantine row each - while user_logins held every one of
them: each event in both places, and a page for events that were loaded. Now, before dead-lettering the events of a
load the database failed, the ETL asks once more which of them user_logins holds: those are replays, deleted only.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import (
    assert_each_event_landed_once,
    drained_within,
    events,
    queue_depth,
    where_each_event_landed,
)
from tests.integration.pg_commit_cut import CommitCut


@pytest.fixture
def commit_cut(stack_env: dict[str, str]) -> Iterator[CommitCut]:
    proxy = CommitCut(int(urlsplit(stack_env["PG_ETL_DSN"]).port or 5432))
    yield proxy
    proxy.close()


def test_a_lost_commit_answer_on_a_last_receive_leaves_each_event_loaded_once_and_none_dead_lettered(
    stack_env: dict[str, str], vault: RunningVault, commit_cut: CommitCut
) -> None:
    sent = events(12, malformed_rate=0)
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=10, max_receive_count=1),  # every receive last
        "ETL_DATABASE_DSN": commit_cut.dsn(stack_env["PG_ETL_DSN"]),
        "ETL_BATCH_SIZE": "20",
        "ETL_RECEIVERS": "1",
        "ETL_MAX_BATCH_AGE_SECONDS": "1",
    }
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    send_events(sqs_client(endpoint), etl_env["ETL_QUEUE_URL"], sent)
    with etl_consumer(etl_env) as etl:
        commit_cut.arm()
        summary = drained_within(etl, 90)
    assert commit_cut.cuts == 1, "no load's COMMIT went through the proxy"
    assert queue_depth(endpoint, etl_env["ETL_QUEUE_URL"]) == 0
    rows, quarantined = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
    assert sorted(rows) == sorted(e.event_id for e in sent)  # the cut COMMIT committed: each loaded once
    assert quarantined == [], f"{len(quarantined)} loaded events quarantined (and dead-lettered) as well"
    assert summary.reasons.get("dependency_unavailable", 0) == 0
    assert (summary.loaded, summary.already_loaded) == (len(sent), 0)  # this receive's COMMIT loaded them (R49-4)
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, endpoint, etl_env["ETL_DLQ_URL"])
