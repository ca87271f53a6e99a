"""A serving-role session holding the key-generation lock, a key row or a session-level advisory lock freezes nothing.

Attack 27, F2/F3. A token insert takes the key-generation lock (`KEYS_LOCK`) shared; before, it waited for it
with no bound, so one session of the serving role holding it (idle in a transaction) stalled every new-value
Tokenize for ever, and the stuck inserts took every pool connection. Now the insert waits 2 s and the call
is answered UNAVAILABLE naming that lock, and the audit upkeep's lock watch ends the holder after 5 s: new
tokens are issued again. The same for a data key's row held FOR UPDATE (migration 0037 makes every new token
lock its keys FOR SHARE, waiting 2 s): the call names the row lock, and the watch ends the holder. The watch
never ends a key operation of this process, nor a session that only read vault.data_keys.

A session holding the audit chain's lock in its session-level form (`pg_advisory_lock`, then idle: not in a
transaction) was never ended, and the watch's warning blamed a role it was not. Now it is ended too, keyed by
its session. Migration 0037 takes the session-level functions away from the serving role; the test grants
them back in a database of its own, so the watch is tested whatever the role may do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import RunningVault, stack_identity
from tests.integration.own_database import database_of_its_own
from tests.integration.pg_backends import lower_the_watch_floor, session_alive
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel
from vault_service.adapters.postgres.chain_lock import AUDIT_CHAIN_LOCK, DATA_KEY_ROWS, NOT_SEEN, ChainLockWatch
from vault_service.adapters.postgres.keys import KEY_JOB_SESSIONS, KEYS_LOCK, PostgresKeyStore
from vault_service.service.ports import NewKey


def _tokenize(stub: vault_pb2_grpc.TokenVaultStub, value: str, timeout: float) -> str:
    request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=value)])
    return str(stub.Tokenize(request, timeout=timeout).results[0].token)


def _new_value() -> str:
    n = uuid.uuid4().int
    return f"198.19.{n % 250}.{n // 250 % 250}"


@pytest.mark.parametrize("holding", ["key lock", "key row"])
def test_a_session_holding_the_key_lock_or_a_key_row_makes_new_tokens_fail_fast_and_is_ended(
    stack_env: dict[str, str], vault: RunningVault, holding: str
) -> None:
    # No transparent retry: each UNAVAILABLE is seen here.
    channel = open_channel(vault.address, stack_identity(stack_env, "etl-service"))
    stub = vault_pb2_grpc.TokenVaultStub(channel)
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue:  # the serving role; a transaction left open
        if holding == "key lock":
            rogue.execute("SELECT vault.lock_key_generation()")
        else:  # the active data key's row (migration 0037: every new token locks its keys FOR SHARE)
            dek = vault.wired.keys.refresh().generation.encryption_id
            rogue.execute("SELECT id FROM vault.data_keys WHERE id = %s FOR UPDATE", (dek,))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            _tokenize(stub, _new_value(), timeout=15)  # before: waited for ever (DEADLINE_EXCEEDED here)
        failed_after = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        names = "key-generation lock" if holding == "key lock" else "a data key's row in vault.data_keys"
        assert names in str(refused.value.details())
        assert failed_after < 5  # the insert's 2 s wait (and the client's own), never a hang

        token = None
        while token is None:
            try:
                token = _tokenize(stub, _new_value(), timeout=15)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert time.monotonic() - started < 20, "the session holding the key lock was never ended"
        served_after = time.monotonic() - started
        with pytest.raises(psycopg.OperationalError):  # the vault's upkeep ended it
            rogue.execute("SELECT 1")
    channel.close()
    assert token.startswith("ip_")
    print(f"\n{holding}: first new token failed after {failed_after:.1f} s; issued again after {served_after:.1f} s")


@pytest.fixture
def serving_pool(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], ConnectionPool]]:
    """A database of the test's own whose serving role may take session-level advisory locks, and a pool of it."""
    with database_of_its_own(stack_env, "locks", migrated=True) as env:
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:  # whatever migration 0037 revoked
            for form in ("pg_advisory_lock(bigint)", "pg_advisory_lock_shared(bigint)"):
                owner.execute(f"GRANT EXECUTE ON FUNCTION pg_catalog.{form} TO tokenvault_vault")
        lower_the_watch_floor(env["PG_ADMIN_DSN"], held_seconds=0.3)  # 0050's 5 s: to the shortest watch's here
        with ConnectionPool(env["PG_VAULT_DSN"], min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
            yield env, pool


def test_the_watch_ends_session_level_and_key_lock_holders_but_never_a_key_operation_of_this_process(
    serving_pool: tuple[dict[str, str], ConnectionPool],
) -> None:
    env, pool = serving_pool
    watch = ChainLockWatch(pool, held_seconds=0.5)
    dsn = env["PG_VAULT_DSN"]
    with (
        psycopg.connect(dsn, autocommit=True) as session_level,  # idle, not in a transaction (attack 27, F2)
        psycopg.connect(dsn, autocommit=True) as shared_session_level,
        psycopg.connect(dsn) as keys_holder,  # idle in a transaction (F3)
        psycopg.connect(dsn) as key_job,  # a key operation of this process
        psycopg.connect(dsn) as row_holder,  # a data key's row FOR UPDATE, idle in a transaction (F5)
        psycopg.connect(dsn) as reader,  # a plain read of vault.data_keys left open: blocks nothing
    ):
        row_holder.execute("SELECT id FROM vault.data_keys ORDER BY id LIMIT 1 FOR UPDATE")
        reader.execute("SELECT count(*) FROM vault.data_keys")
        session_level.execute("SELECT pg_advisory_lock(%s)", (AUDIT_CHAIN_LOCK,))
        shared_session_level.execute("SELECT pg_advisory_lock_shared(%s)", (KEYS_LOCK,))
        keys_holder.execute("SELECT vault.lock_key_generation_shared()")
        with KEY_JOB_SESSIONS.holding(key_job):
            key_job.execute("SELECT vault.lock_key_generation_shared()")
            key_job.execute("SELECT id FROM vault.data_keys ORDER BY id DESC LIMIT 1 FOR SHARE")
            assert watch.end_stale_holders() == []  # first seen now: none held it 0.5 s yet
            time.sleep(0.6)
            holders = watch.end_stale_holders()
            assert session_alive(key_job)  # never ended, never even reported
            key_job.rollback()
        ended = {(h.pid, h.lock): h for h in holders}
        pids = {
            "session_level": session_level.info.backend_pid,
            "shared_session_level": shared_session_level.info.backend_pid,
            "keys_holder": keys_holder.info.backend_pid,
            "row_holder": row_holder.info.backend_pid,
        }
        assert set(ended) == {
            (pids["session_level"], AUDIT_CHAIN_LOCK),
            (pids["shared_session_level"], KEYS_LOCK),
            (pids["keys_holder"], KEYS_LOCK),
            (pids["row_holder"], DATA_KEY_ROWS),
        }
        assert all(h.ended and h.not_ended_because is None for h in holders), holders
        assert ended[(pids["session_level"], AUDIT_CHAIN_LOCK)].state == "idle"
        for conn in (session_level, shared_session_level, keys_holder, row_holder):
            assert not session_alive(conn)
        assert session_alive(reader)


def test_a_key_operation_kept_waiting_is_never_ended_what_keeps_it_waiting_is(
    serving_pool: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Review 31, R31-1/R31-5: a key operation of this process holds the key-generation lock and waits for a
    key row a serving-role session holds FOR KEY SHARE. The watch ended the waiting key operation, every
    time, and never the session that kept it waiting (a relay of such sessions, each under 5 s, blocked every
    rotation). It ends the blocker, never this process's waiter.

    Attack 28, F4: a session of anyone else holding the lock that long is ended itself, waiting or not: the
    exemption let a session take the audit chain's lock (or a key row) and wait on a relay of short blockers,
    each ended in turn, for ever. (At the shipped 5 s a key operation of another process held it that long
    was ended by the holder rule anyway: its own waits give up after 2 s.)"""
    env, pool = serving_pool
    watch = ChainLockWatch(pool, held_seconds=0.5)
    key_id = (
        PostgresKeyStore(pool, "tokenvault-kek")
        .add_key("fingerprint", "vault:v1:not-a-real-key", os.urandom(32))
        .key_id
    )
    for own in (False, True):
        _blocker_is_ended_not_the_waiter(env["PG_VAULT_DSN"], watch, key_id, own)


def _blocker_is_ended_not_the_waiter(dsn: str, watch: ChainLockWatch, key_id: int, own: bool) -> None:
    with (
        psycopg.connect(dsn) as blocker,  # FOR KEY SHARE: blocks a FOR UPDATE, not a new token's FOR SHARE
        psycopg.connect(dsn) as key_operation,  # another process's (or this process's, when `own`)
    ):
        blocker.execute("SELECT id FROM vault.data_keys WHERE id = %s FOR KEY SHARE", (key_id,))
        key_operation.execute("SELECT vault.lock_key_generation()")
        waiting: list[BaseException | None] = []

        def lock_the_row() -> None:
            try:
                key_operation.execute("SELECT id FROM vault.data_keys WHERE id = %s FOR UPDATE", (key_id,))
                waiting.append(None)
            except psycopg.Error as error:
                waiting.append(error)

        operation_pid, blocker_pid = key_operation.info.backend_pid, blocker.info.backend_pid
        with KEY_JOB_SESSIONS.holding(key_operation) if own else contextlib.nullcontext():
            thread = threading.Thread(target=lock_the_row, daemon=True)
            thread.start()
            time.sleep(0.3)
            holders = watch.end_stale_holders()  # first seen now; the blocker, idle 0.5 s, may be ended already
            time.sleep(0.6)
            holders += watch.end_stale_holders()
            thread.join(timeout=10)
            if not own:  # another process's session held the lock 0.9 s, waiting: ended itself (attack 28, F4)
                assert len(waiting) == 1 and isinstance(waiting[0], psycopg.OperationalError), waiting
                assert not session_alive(key_operation)
                # The blocker, holding its key row 0.9 s too, is ended as a key-row holder.
                assert {(h.pid, h.ended, h.blocked) for h in holders} == {
                    (operation_pid, True, None),
                    (blocker_pid, True, None),
                }
                assert not session_alive(blocker)
                return
            assert waiting == [None], waiting  # the key operation got its row: it was left to finish
            assert session_alive(key_operation)
            key_operation.rollback()
        assert [(h.pid, h.ended, h.blocked) for h in holders] == [
            (blocker.info.backend_pid, True, key_operation.info.backend_pid)
        ], holders
        assert not session_alive(blocker)


def test_a_holder_the_watch_may_not_end_is_logged_with_the_true_reason(
    serving_pool: tuple[dict[str, str], ConnectionPool], caplog: pytest.LogCaptureFixture
) -> None:
    env, pool = serving_pool
    watch = ChainLockWatch(pool, held_seconds=0.3)
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:  # a role the serving role may not see
        owner.execute("SELECT pg_advisory_lock(%s)", (AUDIT_CHAIN_LOCK,))
        assert watch.end_stale_holders() == []
        time.sleep(0.4)
        with caplog.at_level(logging.WARNING, logger="vault_service.adapters.postgres.chain_lock"):
            (found,) = watch.end_stale_holders()
        assert not found.ended and found.not_ended_because == NOT_SEEN
        assert session_alive(owner)
    (line,) = [r.getMessage() for r in caplog.records if "was not ended" in r.getMessage()]
    assert NOT_SEEN in line and "synchronous standby" not in line


def test_the_first_key_is_made_before_the_key_lock_is_taken(
    serving_pool: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Making a data key is a Transit call: made while holding the lock, a slow Vault would keep every insert out."""
    env, pool = serving_pool
    store = PostgresKeyStore(pool, "tokenvault-kek")
    held_while_made: list[int] = []

    def make_key() -> NewKey:
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as look:
            row = look.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted", (KEYS_LOCK,)
            ).fetchone()
        held_while_made.append(int(row[0]) if row else -1)
        return NewKey("vault:v1:not-a-real-wrapped-key", os.urandom(32))

    made = store.ensure_active_key("audit", make_key)
    assert held_while_made == [0]  # before: 1 (the Transit call ran under the exclusive key lock)
    assert store.ensure_active_key("audit", make_key).key_id == made.key_id  # found: no second key made
    assert held_while_made == [0]
