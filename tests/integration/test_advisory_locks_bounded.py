"""The serving role cannot fill the server's lock table with advisory locks (attack 27, F9; migration 0045).

Before 0045 the role kept the transaction-level advisory functions (the vault's three locks use them): one
transaction of anyone with its password taking ~12,800 locks on keys of its own filled PostgreSQL's shared lock
table, and every other session's next lock - a Tokenize's, the ETL's, the owner's - failed "out of shared memory"
until that transaction ended. Now the role has no advisory function of pg_catalog; it takes the vault's locks
through the owner's functions, which take only the vault's keys, and at most 4 key-job locks in a transaction.

Real PostgreSQL and the real vault (the stack fixtures), acting with the serving role's password as an insider may.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import psycopg
import pytest
from psycopg import errors

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.fresh_values import Revealer, fresh_value, issue_fresh_ip
from tests.integration.own_database import database_of_its_own, migrate_before
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel
from tokenvault_common.migrations import migrate
from vault_service.adapters.postgres.lock_functions import MIGRATED_MEANWHILE

_FILL = 20_000
"""More advisory locks than the test cluster's lock table holds (max_locks_per_transaction x connections)."""

_VAULTS_FUNCTIONS = (
    "vault.lock_audit_chain()",
    "vault.lock_key_generation_shared()",
    "vault.lock_key_generation()",
    "vault.hold_key_job(integer)",
    "vault.try_claim_key_job(integer)",
)


def _locks_held(conn: psycopg.Connection, pid: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND granted", (pid,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _served(env: dict[str, str], vault: RunningVault) -> None:
    """A new token issued and revealed: the insert's locks, the append's, the reveal's - all still to be had."""
    value, token = issue_fresh_ip(env, vault)
    with Revealer(env, vault, token, "CASE-F9") as reveal:
        assert reveal(timeout=10) == value


@pytest.mark.parametrize(
    "fill",
    [
        "SELECT pg_advisory_xact_lock(k) FROM generate_series(1, %s) k",
        "SELECT pg_advisory_xact_lock_shared(k::int4, 7) FROM generate_series(1, %s) k",
        "SELECT pg_try_advisory_xact_lock(k) FROM generate_series(1, %s) k",
    ],
    ids=["xact", "xact-shared-pair", "try-xact"],
)
def test_the_serving_role_may_not_take_advisory_locks_of_its_own(
    stack_env: dict[str, str], vault: RunningVault, fill: str
) -> None:
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue, psycopg.connect(stack_env["PG_ADMIN_DSN"]) as look:
        with pytest.raises(errors.InsufficientPrivilege):  # before: 20,000 locks taken, the lock table full
            rogue.execute(fill, (_FILL,))
        assert _locks_held(look, rogue.info.backend_pid) == 0
        _served(stack_env, vault)


@pytest.mark.parametrize("function", ["hold_key_job", "try_claim_key_job"])
def test_the_vaults_key_job_locks_stop_at_four_in_a_transaction_and_calls_are_served_meanwhile(
    stack_env: dict[str, str], vault: RunningVault, function: str
) -> None:
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue, psycopg.connect(stack_env["PG_ADMIN_DSN"]) as look:
        for key in range(1, 5):  # one statement each, so the transaction keeps what it took
            rogue.execute(f"SELECT vault.{function}(%s)", (key,))
        assert _locks_held(look, rogue.info.backend_pid) == 4
        # In a savepoint: the refusal rolls back only its own statement, the transaction keeps what it took.
        with pytest.raises(errors.ProgramLimitExceeded) as refused, rogue.transaction():
            rogue.execute(f"SELECT vault.{function}(k) FROM generate_series(5, %s) k", (_FILL,))
        assert "at most 4 key-job locks" in str(refused.value)
        assert _locks_held(look, rogue.info.backend_pid) == 4  # still four, no more
        _served(stack_env, vault)
        rogue.rollback()
        assert _locks_held(look, rogue.info.backend_pid) == 0


def test_the_vaults_lock_functions_are_the_serving_roles_alone(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        for function in _VAULTS_FUNCTIONS:
            may = admin.execute(
                "SELECT r.rolname FROM pg_roles r WHERE has_function_privilege(r.oid, %s, 'EXECUTE')"
                " AND NOT r.rolsuper AND r.rolname LIKE 'tokenvault%%' ORDER BY 1",
                (function,),
            ).fetchall()
            assert {name for (name,) in may} <= {"tokenvault_vault", "tokenvault_owner"}, (function, may)
            assert ("tokenvault_vault",) in may
    for dsn in ("PG_ETL_DSN", "PG_ANALYST_DSN"):
        with psycopg.connect(stack_env[dsn], autocommit=True) as other:
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute("SELECT vault.lock_key_generation()")
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute("SELECT pg_advisory_xact_lock(1)")


def test_a_service_started_before_0045_issues_tokens_before_it_runs_and_after(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The vault of a release works on the schema before its migrations (docs/production.md), and picks 0045 up.

    Before 0045 its inserts take the key-generation lock with pg_catalog's functions; once 0045 revokes them, the
    call that used them is refused UNAVAILABLE naming the migration (nothing stored), and the next uses 0045's.
    """
    with database_of_its_own(stack_env, "before_0045", checkpoint_file=tmp_path / "checkpoints.jsonl") as env:
        assert migrate_before(env, "0045")[-1] < "0045"
        # No transparent retry on the channel: the one refused call is seen here.
        with running_vault(env) as vault, open_channel(vault.address, stack_identity(env, "etl-service")) as channel:
            tokenize = vault_pb2_grpc.TokenVaultStub(channel).Tokenize

            def issue() -> str:
                item = vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=fresh_value(vault_pb2.TOKEN_TYPE_IP))
                return str(tokenize(vault_pb2.TokenizeRequest(items=[item]), timeout=10).results[0].token)

            assert issue().startswith("ip_")  # pg_catalog's lock functions, before 0045
            migrate(env["PG_ADMIN_DSN"])
            refused = 0
            for _ in range(3):
                try:
                    assert issue().startswith("ip_")
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                    assert MIGRATED_MEANWHILE in str(error.details())
                    refused += 1
            assert refused <= 1  # the one call that met the revocation; then 0045's functions
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as role, pytest.raises(errors.InsufficientPrivilege):
            role.execute("SELECT pg_advisory_xact_lock(1)")  # revoked: the service used 0045's functions after
