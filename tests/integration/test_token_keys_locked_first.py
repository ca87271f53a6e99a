"""A new token's keys are locked before it is audited, exist and are of their use; no session-level advisory lock.

Migration 0037 (attack 27, F1, F6, F2/F3), against the real stack, acting with the serving role's
password as an insider may (DESIGN §1b):

- a retirement of a decrypt_only key while an insert under it is still open waits for that insert
  and is then refused, the row staying under a live key (before: the key was retired with the row
  under it, as `reencrypt`'s `ok ... retired [1]` showed); the same for the re-index's promotion
  of a pending fingerprint key while an insert fingerprinted under the active one is open;
- a row under no key, or under a key of the other use, is refused, for the owner too;
- the serving role cannot take (or drop) a session-level advisory lock, which no transaction end
  releases, nor (migration 0045) a transaction-level one but through the vault's own functions, which
  still work, and so does the vault;
- a key row held FOR UPDATE makes a new token fail UNAVAILABLE within about 2 s, and the waiting
  insert holds no audit chain lock meanwhile (its key check fires before the issue's audit row).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from psycopg import errors

from tests.conftest import RunningVault, stack_identity
from tests.integration.fresh_values import Revealer, issue_fresh_ip
from tests.integration.own_database import database_of_its_own
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel
from vault_service.adapters.postgres.chain_lock import AUDIT_CHAIN_LOCK
from vault_service.adapters.postgres.keys import KEYS_LOCK

_KEYS = (
    "INSERT INTO vault.data_keys (purpose, kek_name, wrapped_key, state) VALUES"
    " ('fingerprint', 'kek', 'vault:v1:f', 'active'), ('encryption', 'kek', 'vault:v1:e', 'active'),"
    " ('encryption', 'kek', 'vault:v1:d', 'decrypt_only') RETURNING id"
)
_INSERT = (
    "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
    " VALUES (%s, 'ip', %s, %s, %s, %s)"
)
_RETIRE = (  # what KeyStore.retire_unused_encryption_keys runs once `reencrypt` has moved every value
    "UPDATE vault.data_keys k SET state = 'retired', retired_at = now()"
    " WHERE purpose = 'encryption' AND state = 'decrypt_only' AND id = %s"
    " AND NOT EXISTS (SELECT 1 FROM vault.tokens t WHERE t.dek_id = k.id AND t.sealed IS NOT NULL) RETURNING id"
)
SESSION_LEVEL = (
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
)


def _token() -> str:
    return "ip_m37" + uuid.uuid4().hex[:19]


def _row(fingerprint_key: int, data_key: int) -> tuple[object, ...]:
    return (_token(), os.urandom(32), fingerprint_key, data_key, os.urandom(40))


@pytest.fixture(scope="module")
def own(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], tuple[int, int, int]]]:
    """A migrated database of its own with keys: fingerprint (active), encryption active, encryption decrypt_only."""
    with database_of_its_own(stack_env, "keys_locked", migrated=True) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            (fingerprint_key,), (active_key,), (decrypt_only_key,) = admin.execute(_KEYS).fetchall()
        yield env, (fingerprint_key, active_key, decrypt_only_key)


def _waiting_on(admin: psycopg.Connection, holder: int, seconds: float = 5.0) -> int:
    """The pid of a session waiting for a lock `holder` holds (within `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)) LIMIT 1", (holder,)
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError(f"no session waited for a lock of session {holder}")


def _one(conn: psycopg.Connection, query: str, parameter: object) -> object:
    row = conn.execute(query, (parameter,)).fetchone()
    assert row is not None
    return row[0]


def _pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_retirement_waits_for_an_open_insert_under_its_key_and_is_refused(
    own: tuple[dict[str, str], tuple[int, int, int]],
) -> None:
    env, (fingerprint_key, _, decrypt_only_key) = own
    outcome: list[object] = []

    def retire() -> None:
        with psycopg.connect(env["PG_VAULT_DSN"]) as conn:  # the serving role, as the key job
            try:
                conn.execute("SELECT vault.lock_key_generation()")
                outcome.append(conn.execute(_RETIRE, (decrypt_only_key,)).fetchall())
                conn.commit()
            except psycopg.Error as error:
                outcome.append(error)

    with (
        psycopg.connect(env["PG_VAULT_DSN"]) as inserter,  # its transaction left open
        psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        row = _row(fingerprint_key, decrypt_only_key)
        inserter.execute(_INSERT, row)
        retirement = threading.Thread(target=retire, daemon=True)
        retirement.start()
        _waiting_on(admin, _pid(inserter))  # the retirement waits for the insert
        inserter.commit()
        retirement.join(10)
        assert not retirement.is_alive()
        state = _one(admin, "SELECT state FROM vault.data_keys WHERE id = %s", decrypt_only_key)
        under = _one(admin, "SELECT dek_id FROM vault.tokens WHERE token = %s", row[0])
    assert isinstance(outcome[0], errors.CheckViolation), f"the key was retired with a row under it: {outcome}"
    assert f"data key {decrypt_only_key} still seals stored values" in str(outcome[0])
    assert (state, under) == ("decrypt_only", decrypt_only_key)


def test_a_fingerprint_key_promotion_waits_for_an_open_insert_fingerprinted_under_it_and_is_refused(
    stack_env: dict[str, str],
) -> None:
    """The fingerprint half of F1: the re-index's promotion retires the active key while an insert is open."""
    outcome: list[object] = []
    with database_of_its_own(stack_env, "promotion_locked", migrated=True) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            (active,), (pending,), (data_key,) = admin.execute(
                "INSERT INTO vault.data_keys (purpose, kek_name, wrapped_key, state) VALUES"
                " ('fingerprint', 'kek', 'vault:v1:f1', 'active'), ('fingerprint', 'kek', 'vault:v1:f2', 'pending'),"
                " ('encryption', 'kek', 'vault:v1:e', 'active') RETURNING id"
            ).fetchall()

        def promote() -> None:  # KeyStore.promote_pending_fingerprint_key's first change, as the serving role
            with psycopg.connect(env["PG_VAULT_DSN"]) as conn:
                try:
                    conn.execute("SELECT vault.lock_key_generation()")
                    conn.execute(
                        "UPDATE vault.data_keys SET state = 'retired', retired_at = now() WHERE id = %s", (active,)
                    )
                    outcome.append(
                        conn.execute("UPDATE vault.data_keys SET state = 'active' WHERE id = %s", (pending,))
                    )
                    conn.commit()
                except psycopg.Error as error:
                    outcome.append(error)

        with (
            psycopg.connect(env["PG_VAULT_DSN"]) as inserter,  # no next fingerprint under the pending key
            psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin,
        ):
            inserter.execute(_INSERT, _row(active, data_key))
            promotion = threading.Thread(target=promote, daemon=True)
            promotion.start()
            _waiting_on(admin, _pid(inserter))
            inserter.commit()
            promotion.join(10)
            assert not promotion.is_alive()
            states = admin.execute(
                "SELECT state FROM vault.data_keys WHERE id IN (%s, %s) ORDER BY id", (active, pending)
            )
            assert [s for (s,) in states] == ["active", "pending"]
    assert isinstance(outcome[0], errors.CheckViolation), f"promoted with a value not re-indexed: {outcome}"
    assert f"fingerprint key {active} is retired only by the re-index" in str(outcome[0])


@pytest.mark.parametrize("dsn", ["PG_VAULT_DSN", "PG_ADMIN_DSN"])
def test_a_row_under_no_key_or_a_key_of_the_other_use_is_refused(
    own: tuple[dict[str, str], tuple[int, int, int]], dsn: str
) -> None:
    env, (fingerprint_key, active_key, _) = own
    wrong = {
        "encryption key 999999: no such key": _row(fingerprint_key, 999999),
        f"encryption key {fingerprint_key}: a key of purpose fingerprint": _row(fingerprint_key, fingerprint_key),
        "fingerprint key 999999: no such key": _row(999999, active_key),
        f"fingerprint key {active_key}: a key of purpose encryption": _row(active_key, active_key),
    }
    with psycopg.connect(env[dsn], autocommit=True) as conn:
        for named, row in wrong.items():
            with pytest.raises(errors.CheckViolation) as refused:
                conn.execute(_INSERT, row)
            assert refused.value.diag.constraint_name == "tokens_under_keys_of_their_use"
            assert named in str(refused.value) and str(row[0]) not in str(refused.value)
        conn.execute(_INSERT, _row(fingerprint_key, active_key))  # its own keys: in


def test_the_serving_role_takes_no_advisory_lock_of_its_own_and_the_vault_still_works(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """0037 took the session-level forms; 0045 (attack 27, F9) the transaction-level ones: the vault's own functions."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        kept = admin.execute(
            "SELECT p.oid::regprocedure::text, has_function_privilege('tokenvault_vault', p.oid, 'EXECUTE')"
            " FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg%%advisory%%'"
        ).fetchall()
    allowed = {name.split("(")[0] for name, may in kept if may}
    refused = {name.split("(")[0] for name, may in kept if not may}
    assert allowed == set() and set(SESSION_LEVEL) | {"pg_advisory_xact_lock", "pg_try_advisory_xact_lock"} <= refused

    with psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as rogue:
        for lock in (AUDIT_CHAIN_LOCK, KEYS_LOCK):
            for call in ("pg_advisory_lock(%s)", "pg_try_advisory_lock_shared(%s)", "pg_advisory_xact_lock(%s)"):
                with pytest.raises(errors.InsufficientPrivilege):
                    rogue.execute(f"SELECT {call}", (lock,))
        with rogue.transaction():  # the forms the vault uses, through its functions, released at commit
            rogue.execute("SELECT vault.lock_key_generation_shared()")
            rogue.execute("SELECT vault.lock_key_generation()")

    value, token = issue_fresh_ip(stack_env, vault)
    with Revealer(stack_env, vault, token, "CASE-M37") as reveal:
        assert reveal(timeout=10) == value


def test_a_key_row_held_for_update_makes_a_new_token_fail_fast_holding_no_chain_lock(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    channel = open_channel(vault.address, stack_identity(stack_env, "etl-service"))  # no transparent retry
    tokenize = vault_pb2_grpc.TokenVaultStub(channel).Tokenize

    def request() -> vault_pb2.TokenizeRequest:
        value = f"198.19.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
        return vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=value)])

    answers: list[object] = []
    seconds: list[float] = []

    def call() -> None:
        started = time.monotonic()
        try:
            answers.append(tokenize(request(), timeout=20))
        except grpc.RpcError as error:
            answers.append(error)
        seconds.append(time.monotonic() - started)

    with (
        psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue,  # the serving role, a transaction left open
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        rogue.execute("SELECT id FROM vault.data_keys WHERE purpose = 'encryption' AND state = 'active' FOR UPDATE")
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        waiting = _waiting_on(admin, _pid(rogue))  # the vault's insert, waiting for the key row
        chain = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND pid = %s AND granted",
            (AUDIT_CHAIN_LOCK, waiting),
        ).fetchone()
        caller.join(10)
        assert not caller.is_alive(), "the new token waited for the key row without bound"
    assert chain == (0,), "the insert waited for a key row holding the audit chain's lock"
    (error,) = answers
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE, answers
    assert 1.5 < seconds[0] < 5  # lock_timeout 2 s, then the answer
    assert tokenize(request(), timeout=10).results[0].token  # released: new tokens again
    channel.close()
