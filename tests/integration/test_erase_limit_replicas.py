"""The erase limit against a stolen privacy-officer certificate and more than one vault process.

docs/threat-model.md 13b: "the shipped [defaults.limits] allow 100 tokens at once, then 18 an
hour ... so one person's values are erased at once and a bulk wipe is refused". The buckets are
kept in each process's memory: the Kubernetes manifests run 2 to 12 replicas behind one
Service, and a replica that starts (a deploy, a scale-up, a crash) starts with a full bucket.

The vaults here run on a database of the test's own: the bucket lives in the database now, and
draining the privacy officer's in the stack's shared one would refuse later tests' erasures.
"""

from __future__ import annotations

import grpc
import psycopg
import pytest
from psycopg import errors

from tests.conftest import running_vault
from tests.integration.audit_attacks import own_database
from tests.integration.erase_calls import (
    DOCUMENTED_ERASE_BURST,
    SHIPPED_ERASE_LIMIT,
    erase,
    letters,
    new_ip_tokens,
    stub_as,
)

__all__ = ["own_database"]  # fixture used here, defined beside the audit tests

ERASE_BURST = SHIPPED_ERASE_LIMIT.burst


def test_one_certificate_erases_no_more_than_one_burst_across_replicas_and_restarts(
    own_database: dict[str, str],
) -> None:
    assert ERASE_BURST == DOCUMENTED_ERASE_BURST  # the number the threat model states is the one shipped
    stack_env = own_database
    purpose = "GDPR-BULK-" + letters()
    answers = []
    with running_vault(stack_env) as first, running_vault(stack_env) as second:
        tokens = new_ip_tokens(stack_env, first.address, 3 * ERASE_BURST)
        for replica, batch in ((first, tokens[:ERASE_BURST]), (second, tokens[ERASE_BURST : 2 * ERASE_BURST])):
            with stub_as(stack_env, replica.address, "privacy-officer") as officer:
                answers.append(erase(officer, batch, purpose))
    with running_vault(stack_env) as restarted, stub_as(stack_env, restarted.address, "privacy-officer") as officer:
        answers.append(erase(officer, tokens[2 * ERASE_BURST :], purpose))  # the same replica after a deploy
    erased = sum(a.erased for a in answers)
    assert erased <= ERASE_BURST, (
        f"one privacy-officer certificate erased {erased} values within seconds (shipped burst {ERASE_BURST}):"
        " two replicas and one restart each gave it a full bucket"
    )
    # The first call, one full burst, is served: the limit refuses the bulk, not the work.
    assert [a.code for a in answers] == [grpc.StatusCode.OK] + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert erased == ERASE_BURST


@pytest.mark.parametrize(
    "statement",
    [
        # vault.call_budget (migration 0019) keeps the erase buckets, one row per (client, kind).
        "DELETE FROM vault.call_budget",
        "UPDATE vault.call_budget SET tokens = 1e9",
        "INSERT INTO vault.call_budget VALUES ('privacy-officer', 'erase', 1e9, now())",
        "SELECT * FROM vault.call_budget FOR UPDATE",  # would hold every erasure up
    ],
)
def test_the_serving_role_cannot_write_or_lock_the_budget_table(own_database: dict[str, str], statement: str) -> None:
    # Only direct writes to vault.call_budget: the role can still refill or drain a bucket by
    # calling vault.take_call_budget with a rate and burst of its own (threat model 13b, accepted).
    with psycopg.connect(own_database["PG_VAULT_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_the_erase_budget_function_only_takes(own_database: dict[str, str]) -> None:
    # The serving role's one way in: a count of at least one, taken on the database's clock.
    take = "SELECT vault.take_erase_budget('officer', %s, 0.001, 2)"
    with psycopg.connect(own_database["PG_VAULT_DSN"], autocommit=True) as conn:
        for count in (0, -5):
            with pytest.raises(errors.InvalidParameterValue):
                conn.execute(take, (count,))
        waits = [row[0] for count in (2, 1) for row in conn.execute(take, (count,)).fetchall()]
    assert waits[0] == 0 and waits[1] > 900  # the burst of 2 taken, then about 1000 s to the next
    with psycopg.connect(own_database["PG_ETL_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(take, (1,))
