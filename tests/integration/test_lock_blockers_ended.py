"""A session of the serving role keeping the vault's sessions waiting for any lock is ended (review 31, R31-6, R31-2).

R31-6: a serving-role session holding a client's call-budget row (vault.take_call_budget called in a transaction
left open) made every call of that client fail UNAVAILABLE after its 2 s wait, for as long as it liked: the watch
ended holders of the chain lock, the key-generation lock and key rows only. The upkeep's watch now ends a session
of the role that keeps any session of the vault waiting for 5 s in one transaction, whatever the lock.

R31-2: a relay of sessions each holding the key-generation lock in its transaction-level form under 5 s, back to
back, refused every key job (2 s wait) and nothing was ended. A key operation of this process kept waiting 1 s now
has what keeps it waiting ended at once, and the job completes.

Never ended: a session that itself only waits, a session of this process, and another process's key operation
holding the key-generation lock and key rows for seconds while new tokens wait behind it (within 5 s).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import RunningVault, stack_identity
from tests.integration.fresh_values import issue_fresh_ip
from tests.integration.own_database import database_of_its_own
from tests.integration.pg_backends import lower_the_watch_floor, session_alive
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel
from vault_service.adapters.postgres.chain_lock import (
    AUDIT_CHAIN_LOCK,
    BLOCKED_A_VAULT_SESSION,
    ChainLockHolder,
    ChainLockWatch,
    ProcessSessions,
)
from vault_service.adapters.postgres.keys import PostgresKeyStore
from vault_service.domain.errors import DatabaseUnavailable


def test_a_session_holding_a_client_s_budget_row_is_ended_and_the_client_served_again(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = [issue_fresh_ip(stack_env, vault)[1] for _ in range(10)]
    channel = open_channel(vault.address, stack_identity(stack_env, "privacy-officer"))  # no transparent retry
    erase = vault_pb2_grpc.TokenVaultStub(channel).Erase
    with (
        caplog.at_level(logging.ERROR, logger="vault_service.adapters.postgres.chain_lock"),
        psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue,  # the serving role; a transaction left open
    ):
        # The privacy officer's erase row, locked to the transaction's end (takes 1 item, refills nothing to speak of).
        rogue.execute("SELECT * FROM vault.take_call_budget('privacy-officer', 'erase', 1, 1, 0.000001, 1000000)")
        rogue_pid = rogue.info.backend_pid
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            erase(vault_pb2.EraseRequest(tokens=tokens[:1], purpose="GDPR-2026-R31"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "call budget" in str(refused.value.details())
        failed_after = time.monotonic() - started
        served_after = None
        for token in tokens[1:]:
            try:
                erase(vault_pb2.EraseRequest(tokens=[token], purpose="GDPR-2026-R31"), timeout=10)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the row was read: not held any more
                    served_after = time.monotonic() - started
                    break
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                assert "call budget" in str(error.details())
            else:
                served_after = time.monotonic() - started
                break
        assert served_after is not None, "the session holding the budget row was never ended (before: never)"
        assert served_after < 16  # held 5 s (idle since its take), seen by a 2 s round, then one call
        assert not session_alive(rogue)  # the vault's upkeep ended it
    channel.close()
    lines = [r for r in caplog.records if getattr(r, "pid", None) == rogue_pid]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].lock == "a row of vault.call_budget"  # type: ignore[attr-defined]
    assert "ended a database session that kept a session of the vault waiting" in lines[0].getMessage()
    print(f"\nthe held client's erasure failed after {failed_after:.1f} s, served again after {served_after:.1f} s")


_APPEND = "INSERT INTO vault.audit_log (client, action, item_count, outcome) VALUES ('x', 'detokenize', 0, 'ok')"
"""An audit row as the vault appends one: the chain trigger takes the chain's lock, held to the commit."""


@pytest.fixture
def own_database(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], ConnectionPool]]:
    """A migrated database of the test's own and a pool of its serving role.

    Migration 0050's server-side bounds brought down to the shortest test watch's here (0.5 s held; 1 s waited)."""
    with (
        database_of_its_own(stack_env, "blockers", migrated=True) as env,
        ConnectionPool(env["PG_VAULT_DSN"], min_size=1, max_size=3, kwargs={"autocommit": True}) as pool,
    ):
        lower_the_watch_floor(env["PG_ADMIN_DSN"], held_seconds=0.5)
        yield env, pool


class _Rounds:
    """The upkeep's rounds: `watch.end_stale_holders()` every `interval` seconds on a thread, until stopped."""

    def __init__(self, watch: ChainLockWatch, interval: float) -> None:
        self.found: list[ChainLockHolder] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(watch, interval), daemon=True)

    def _run(self, watch: ChainLockWatch, interval: float) -> None:
        while not self._stop.wait(interval):
            self.found.extend(watch.end_stale_holders())

    def __enter__(self) -> _Rounds:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_a_relay_on_the_key_generation_lock_is_broken_up_and_the_key_job_completes(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Sessions of the role each hold KEYS_LOCK shared 4 s (under the 5 s bound), a new one every second."""
    env, pool = own_database
    store = PostgresKeyStore(pool, "tokenvault-kek")
    stop = threading.Event()
    relay_pids: set[int] = set()

    def relay_member(delay: float) -> None:
        time.sleep(delay)
        while not stop.is_set():
            try:
                with psycopg.connect(env["PG_VAULT_DSN"]) as conn:
                    relay_pids.add(conn.info.backend_pid)
                    while not stop.is_set():
                        conn.execute("SELECT vault.lock_key_generation_shared()")
                        conn.execute("SELECT pg_sleep(4)")  # active, not idle: only the time held tells
                        conn.commit()
            except psycopg.OperationalError:
                continue  # ended by the watch: back in the relay with a new session

    members = [threading.Thread(target=relay_member, args=(n * 1.0,), daemon=True) for n in range(4)]
    for member in members:
        member.start()
    try:
        time.sleep(4.2)  # every member holds the lock, the youngest for 3 s more at least
        with pytest.raises(DatabaseUnavailable, match="key-generation lock"):  # the relay works: no watch, refused
            store.add_key("encryption", "vault:v1:not-a-real-key", os.urandom(32))
        watch = ChainLockWatch(pool)  # the service's bounds: 5 s held, a key job kept waiting 1 s
        attempts = []
        with _Rounds(watch, interval=2.0) as rounds:  # the upkeep's default interval
            for _ in range(3):
                started = time.monotonic()
                try:
                    made = store.add_key("encryption", "vault:v1:not-a-real-key", os.urandom(32))
                except DatabaseUnavailable:  # before: every attempt
                    attempts.append(("refused", time.monotonic() - started))
                    time.sleep(0.7)  # a job is run again by someone: not in step with the rounds
                    continue
                attempts.append(("made", time.monotonic() - started))
                break
        assert attempts[-1][0] == "made", attempts
        assert made.state == "active"
        ended = [h for h in rounds.found if h.ended]
        assert ended and all(h.lock == BLOCKED_A_VAULT_SESSION and h.pid in relay_pids for h in ended), ended
        assert all(h.kind == "the key-generation lock" for h in ended)
    finally:
        stop.set()
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:  # not waiting out their pg_sleep
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(relay_pids),)
            )
        for member in members:
            member.join(timeout=10)
    print(f"\nkey job attempts under the relay, with the watch: {attempts}")


def test_a_legitimate_long_key_operation_is_not_ended_for_new_tokens_waiting_behind_it(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Another process's key operation holds the key-generation lock and the key rows 3.5 s (a promotion's check
    over a large table) while new tokens wait behind it (each 2 s). Rounds every 0.5 s, the service's bounds: it
    is not ended (a rule ending what keeps any vault session waiting 1 s ended it)."""
    env, pool = own_database
    dsn = env["PG_VAULT_DSN"]
    watch = ChainLockWatch(pool)

    def new_tokens_wait(until: float) -> None:  # as a token insert takes KEYS_LOCK: shared, waiting 2 s
        with psycopg.connect(dsn) as insert:
            while time.monotonic() < until:
                try:
                    insert.execute("SET LOCAL lock_timeout = '2s'")
                    insert.execute("SELECT vault.lock_key_generation_shared()")
                    insert.rollback()
                    time.sleep(0.05)
                except psycopg.errors.LockNotAvailable:
                    insert.rollback()

    with psycopg.connect(dsn) as key_operation, _Rounds(watch, interval=0.5) as rounds:  # another replica's
        inserts = threading.Thread(target=new_tokens_wait, args=(time.monotonic() + 4.0,), daemon=True)
        key_operation.execute("SELECT vault.lock_key_generation()")
        key_operation.execute("SELECT id FROM vault.data_keys ORDER BY id FOR UPDATE")
        inserts.start()
        key_operation.execute("SELECT pg_sleep(3.5)")  # its check under the lock, new tokens waiting
        key_operation.commit()  # before: the same (nothing ended it)
        inserts.join(timeout=10)
        time.sleep(0.6)  # a round after
    assert rounds.found == [], rounds.found


def test_a_session_of_this_process_is_never_ended_another_s_is(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Two sessions each hold a client's budget row, another session waiting for each: the one of this process is
    left (the vault at work: never ended for keeping another waiting), the other is ended (a short bound, 0.5 s,
    for the test). Holding a watched lock itself, not waiting, it is ended: the test after this one."""
    env, pool = own_database
    dsn = env["PG_VAULT_DSN"]
    own = ProcessSessions()
    watch = ChainLockWatch(pool, held_seconds=0.5, own_sessions=own.sessions)
    take = "SELECT * FROM vault.take_call_budget(%s, 'erase', 1, 1, 1, 1000)"
    with (
        psycopg.connect(dsn, autocommit=True) as ours,
        psycopg.connect(dsn, autocommit=True) as theirs,
        psycopg.connect(dsn) as waits_for_ours,
        psycopg.connect(dsn) as waits_for_theirs,
    ):
        own.note(ours)
        for holder, client in ((ours, "analyst"), (theirs, "fraud-investigator")):
            holder.execute("BEGIN")
            holder.execute(take, (client,))
        outcomes: dict[str, str] = {}

        def wait(conn: psycopg.Connection, client: str) -> None:
            try:
                conn.execute(take, (client,))
                outcomes[client] = "taken"
            except psycopg.errors.LockNotAvailable:
                outcomes[client] = "gave up"  # its 2 s wait (migration 0038)
            conn.rollback()

        waiters = [
            threading.Thread(target=wait, args=(waits_for_ours, "analyst"), daemon=True),
            threading.Thread(target=wait, args=(waits_for_theirs, "fraud-investigator"), daemon=True),
        ]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.8)  # both idle in their transaction for 0.5 s and more, both waiters waiting
        found = watch.end_stale_holders()
        for waiter in waiters:
            waiter.join(timeout=10)
        assert [(h.pid, h.ended, h.blocked, h.kind) for h in found] == [
            (theirs.info.backend_pid, True, waits_for_theirs.info.backend_pid, "a row of vault.call_budget")
        ], found  # before: nothing ended
        assert outcomes == {"analyst": "gave up", "fraud-investigator": "taken"}
        assert session_alive(ours) and not session_alive(theirs)
        ours.execute("ROLLBACK")


def test_a_session_of_this_process_holding_the_chain_lock_without_waiting_is_ended_by_its_own_watch(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Review 33, R33-2: "this process's sessions are never ended" holds only for keeping others waiting and while
    they wait. One of them holding the audit chain's lock `held_seconds` while `active` (a statement stalled after
    its append: a disk stall at commit), waiting for no lock, is ended by this process's own watch, as any holder."""
    env, pool = own_database
    own = ProcessSessions()
    watch = ChainLockWatch(pool, held_seconds=1.0, own_sessions=own.sessions)
    with psycopg.connect(env["PG_VAULT_DSN"]) as ours:
        own.note(ours)  # as every vault pool's configure does
        ours.commit()
        pid = ours.info.backend_pid
        assert pid in {p for p, _ in own.sessions()}
        ours.execute(_APPEND)  # the chain trigger takes the audit chain's lock, as every append of the vault
        errors: list[BaseException] = []

        def stalled() -> None:
            try:
                ours.execute("SELECT pg_sleep(8)")
            except psycopg.OperationalError as error:
                errors.append(error)

        worker = threading.Thread(target=stalled, daemon=True)
        worker.start()
        time.sleep(0.3)
        assert watch.end_stale_holders() == []  # first seen holding it
        time.sleep(1.1)
        found = watch.end_stale_holders()
        worker.join(timeout=10)
    assert [(h.pid, h.ended, h.lock, h.blocked) for h in found] == [(pid, True, AUDIT_CHAIN_LOCK, None)], found
    assert errors and not worker.is_alive()  # its statement ended, well before its 8 s


def test_a_budget_row_holder_that_waits_itself_is_ended_not_only_what_it_waits_for(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Attack 28, F4, on any lock: a session holding a client's budget row, then waiting for an advisory lock a
    second session holds, kept the client's calls waiting; the watch ended only the second one (the holder, itself
    waiting, was a victim to it), so a relay of such second sessions kept the row held for ever. The holder is
    ended itself now, waiting or not (a short bound, 1 s, for the test)."""
    env, pool = own_database
    dsn = env["PG_VAULT_DSN"]
    watch = ChainLockWatch(pool, held_seconds=1.0, own_sessions=ProcessSessions().sessions)
    take = "SELECT * FROM vault.take_call_budget('privacy-officer', 'erase', 1, 1, 1, 1000)"
    with (
        psycopg.connect(dsn) as relay_member,
        psycopg.connect(dsn) as holder,
        psycopg.connect(dsn) as call,  # the vault's take of the client's budget, as a call makes it
    ):
        relay_member.execute("SELECT vault.try_claim_key_job(7700100)")  # exclusively
        holder.execute(take)
        holder_pid = holder.info.backend_pid
        outcomes: list[str] = []

        def hold_and_wait() -> None:
            try:
                holder.execute("SELECT vault.hold_key_job(7700100)")  # waits: a relay would hand it the next
                outcomes.append("got the relay's lock")
            except psycopg.OperationalError:
                outcomes.append("ended")

        def take_the_budget() -> None:
            try:
                call.execute(take)
                outcomes.append("taken")
            except psycopg.errors.LockNotAvailable:
                outcomes.append("gave up")  # its 2 s wait (migration 0038)
            call.rollback()

        threads = [threading.Thread(target=hold_and_wait, daemon=True)]
        threads[0].start()
        time.sleep(0.2)
        threads.append(threading.Thread(target=take_the_budget, daemon=True))
        threads[1].start()
        time.sleep(0.2)
        found = watch.end_stale_holders()  # the holder first seen keeping the call waiting; nothing held 1 s yet
        assert found == []
        time.sleep(1.1)
        found += watch.end_stale_holders()
        for thread in threads:
            thread.join(timeout=10)
        assert any(h.pid == holder_pid and h.ended for h in found), found  # before: only the relay member
        assert "taken" in outcomes, outcomes
        assert not session_alive(holder)  # (the relay member, held as long, may be ended in the same round)
        session_alive(relay_member)


def test_a_session_of_this_process_keeping_another_of_its_sessions_waiting_is_not_ended(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """Review 33, R33-7: "this process's" was spelled three ways. A session of this process holding the chain's lock
    while it waits for a lock another session of this process holds: what keeps it waiting is ended only if it is not
    this process's (before: any session but a key operation of this process, so the vault's own session was ended)."""
    env, pool = own_database
    own = ProcessSessions()
    watch = ChainLockWatch(pool, held_seconds=0.5, own_sessions=own.sessions)
    with psycopg.connect(env["PG_VAULT_DSN"]) as blocker, psycopg.connect(env["PG_VAULT_DSN"]) as waiter:
        for conn in (blocker, waiter):
            own.note(conn)
            conn.commit()
        blocker.execute("SELECT vault.try_claim_key_job(7700200)")  # exclusively
        waiter.execute("SELECT vault.lock_audit_chain()")
        waited: list[str] = []

        def wait() -> None:
            try:
                waiter.execute("SELECT vault.hold_key_job(7700200)")
                waited.append("got it")
            except psycopg.OperationalError:
                waited.append("ended")

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.2)
        found = watch.end_stale_holders()
        time.sleep(0.6)
        found += watch.end_stale_holders()
        assert session_alive(blocker)  # before: ended by its own process's watch
        assert [h for h in found if h.ended] == [], found
        blocker.rollback()
        thread.join(timeout=10)
        assert waited == ["got it"]
        waiter.rollback()
