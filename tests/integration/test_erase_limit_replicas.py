"""The erase limit against a stolen privacy-officer certificate and more than one vault process.

docs/threat-model.md 13b: "the shipped [defaults.limits] allow 100 tokens at once, then 18 an
hour ... so one person's values are erased at once and a bulk wipe is refused". The buckets are
kept in each process's memory: the Kubernetes manifests run 2 to 12 replicas behind one
Service, and a replica that starts (a deploy, a scale-up, a crash) starts with a full bucket.

The vaults here run on a database of the test's own: the bucket lives in the database now, and
draining the privacy officer's in the stack's shared one would refuse later tests' erasures.
"""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from psycopg import errors

from tests.conftest import client_channel, running_vault
from tests.integration.test_audit_tamper import own_database
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

__all__ = ["own_database"]  # fixture used here, defined beside the audit tests

ERASE_BURST = 100  # config/vault-policy.toml [defaults.limits] erase_burst


def _letters() -> str:
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])


def _erase(env: dict[str, str], address: str, tokens: list[str], purpose: str) -> int:
    channel = client_channel(env, address, "privacy-officer")
    try:
        response = vault_pb2_grpc.TokenVaultStub(channel).Erase(
            vault_pb2.EraseRequest(tokens=tokens, purpose=purpose), timeout=30
        )
        return sum(r.erased for r in response.results)
    except grpc.RpcError:
        return 0
    finally:
        channel.close()


def test_one_certificate_erases_no_more_than_one_burst_across_replicas_and_restarts(
    own_database: dict[str, str],
) -> None:
    stack_env = own_database
    prefix = f"10.{uuid.uuid4().int % 250}"
    values = [f"{prefix}.{n // 250}.{n % 250 + 1}" for n in range(3 * ERASE_BURST)]
    purpose = "GDPR-BULK-" + _letters()
    with running_vault(stack_env) as first, running_vault(stack_env) as second:
        channel = client_channel(stack_env, first.address, "etl-service")
        column = vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=values)
        tokens = list(
            vault_pb2_grpc.TokenVaultStub(channel)
            .Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=30)
            .columns[0]
            .tokens
        )
        channel.close()
        erased = _erase(stack_env, first.address, tokens[:ERASE_BURST], purpose)
        erased += _erase(stack_env, second.address, tokens[ERASE_BURST : 2 * ERASE_BURST], purpose)
    with running_vault(stack_env) as restarted:  # the same replica after a deploy or a crash
        erased += _erase(stack_env, restarted.address, tokens[2 * ERASE_BURST :], purpose)
    assert erased <= ERASE_BURST, (
        f"one privacy-officer certificate erased {erased} values within seconds (shipped burst {ERASE_BURST}):"
        " two replicas and one restart each gave it a full bucket"
    )


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
