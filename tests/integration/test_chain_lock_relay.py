"""A relay of serving-role sessions queued on the audit chain's lock no longer freezes every reveal (review 33, R33-1).

Each relay member: BEGIN; pg_advisory_xact_lock(AUDIT_CHAIN_LOCK) - queued behind the previous member, ahead of every
vault append that arrives later; once granted it opens the next member (which queues at once) and holds the lock
2.3 s. Every append then waited over 2 s and failed, and each member's transaction (~4.6 s) stayed under both 5 s
rules: 0 of 10 reveals served over 30 s, no session ended, no line logged. Since migration 0045 the role takes the
chain's lock only through vault.lock_audit_chain() (or an append), whose wait gives up at 2 s: the members here hold
it 1.8 s, so that each queued member is granted within its wait, and an append arriving waits up to 3.6 s.
The chain-wait rule (chain_lock.py, `end_what_keeps_chain_appends_waiting`, every 0.25 s on a thread of the
vault) ends, once a session of the role has waited 1 s for the chain's lock, what keeps it waiting and is not one
of the vault's appends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import RunningVault
from tests.integration.fresh_values import Revealer, issue_fresh_ip
from tests.integration.own_database import database_of_its_own
from vault_service.adapters.postgres.chain_lock import ChainLockWatch, ProcessSessions

HOLD = 1.8
RUN = 20.0
_APPEND = "INSERT INTO vault.audit_log (client, action, item_count, outcome) VALUES ('x', 'detokenize', 0, 'ok')"


class QueuedRelay:
    """The reviewer's relay (review 33, test_r33_chain_relay.py), two sessions at a time: a member ended before it
    opened the next is replaced by a new one."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.started = 0
        self.ended = 0
        self.longest = 0.0
        self.pids: set[int] = set()
        self.threads: list[threading.Thread] = []

    def member(self) -> None:
        t0 = time.monotonic()
        spawned = False
        try:
            with psycopg.connect(self.dsn) as conn:  # a transaction opened by the first statement
                self.pids.add(conn.info.backend_pid)
                conn.execute("SELECT vault.lock_audit_chain()")
                if not self.stop.is_set():
                    self.spawn()  # the next member queues now, ahead of later vault appends
                    spawned = True
                conn.execute("SELECT pg_sleep(%s)", (HOLD,))
                conn.commit()
            self.longest = max(self.longest, time.monotonic() - t0)
        except psycopg.OperationalError:
            self.ended += 1
            if not self.stop.is_set() and not spawned:  # (the reviewer's respawned always: one chain more per
                self.spawn()  # member ended while holding, until the server's connection slots ran out)

    def spawn(self) -> None:
        self.started += 1
        t = threading.Thread(target=self.member, daemon=True)
        self.threads.append(t)
        t.start()


def test_a_relay_queued_on_the_chain_lock_is_ended_and_reveals_are_served(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="vault_service.adapters.postgres.chain_lock")
    value, token = issue_fresh_ip(stack_env, vault)
    reveal = Revealer(stack_env, vault, token, "CASE-R33-1")  # no transparent retry
    assert reveal(timeout=10) == value

    relay = QueuedRelay(stack_env["PG_VAULT_DSN"])
    relay.spawn()
    time.sleep(0.3)
    ok = failed = 0
    took: list[float] = []
    t_end = time.monotonic() + RUN
    try:
        while time.monotonic() < t_end:
            started = time.monotonic()
            try:
                reveal(timeout=10)
                ok += 1
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                failed += 1
            took.append(time.monotonic() - started)
            time.sleep(0.2)
        ended_by_the_watch = relay.ended
    finally:
        relay.stop.set()
        with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:  # not waiting out their sleeps
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(relay.pids),)
            ).fetchall()
        for t in list(relay.threads):
            t.join(timeout=10)
    reveal.close()
    lines = [r for r in caplog.records if r.name.endswith("chain_lock") and getattr(r, "pid", None) in relay.pids]
    took.sort()
    print(
        f"\nqueued relay HOLD={HOLD}s over {RUN:.0f}s: reveals ok={ok} failed={failed}"
        f" (median {took[len(took) // 2]:.2f} s, slowest {took[-1]:.2f} s); relay sessions started={relay.started}"
        f" ended by the watch={ended_by_the_watch} longest transaction={relay.longest:.2f}s;"
        f" watch lines naming them={len(lines)}"
    )
    assert ok >= 0.9 * (ok + failed), (ok, failed)  # before: 0 of 10
    assert ended_by_the_watch >= 1 and lines  # its members ended, each with a line (before: none ended, no line)


@pytest.fixture
def own_database(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], ConnectionPool]]:
    with (
        database_of_its_own(stack_env, "chainrelay", migrated=True) as env,
        ConnectionPool(env["PG_VAULT_DSN"], min_size=1, max_size=2, kwargs={"autocommit": True}) as pool,
    ):
        yield env, pool


def test_another_replica_s_append_queued_behind_a_holder_is_left_and_gets_the_lock(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """A session of the role holds the chain's lock in a transaction that began with another statement; two plain
    appends of another replica (autocommit INSERTs, the trigger's 2 s wait) queue behind it, the second 0.3 s after
    the first. Looks every 0.25 s: the holder is ended once the first append waited 1 s; both appends are left and
    both are written. Another holder then: one that took the lock at once and sleeps (never queued)."""
    env, pool = own_database
    dsn = env["PG_VAULT_DSN"]
    watch = ChainLockWatch(pool, own_sessions=ProcessSessions().sessions)  # nothing here is this process's
    for took_it_at_once in (False, True):
        with (
            psycopg.connect(dsn) as holder,
            psycopg.connect(dsn, autocommit=True) as first,
            psycopg.connect(dsn, autocommit=True) as second,
        ):
            if not took_it_at_once:
                holder.execute("SELECT 1")  # its transaction began with something else
                time.sleep(0.6)
            holder.execute("SELECT vault.lock_audit_chain()")
            holder_pid = holder.info.backend_pid
            outcomes: dict[str, str] = {}

            def hold(outcomes: dict[str, str] = outcomes) -> None:
                try:
                    holder.execute("SELECT pg_sleep(4)")
                    outcomes["holder"] = "held 4 s"
                except psycopg.OperationalError:
                    outcomes["holder"] = "ended"

            def append(name: str, conn: psycopg.Connection, outcomes: dict[str, str] = outcomes) -> None:
                try:
                    conn.execute(_APPEND)
                    outcomes[name] = "written"
                except psycopg.errors.LockNotAvailable:
                    outcomes[name] = "gave up"  # the trigger's 2 s wait (migration 0035)
                except psycopg.OperationalError:
                    outcomes[name] = "ended"

            threads = [
                threading.Thread(target=hold, daemon=True),
                threading.Thread(target=append, args=("first", first), daemon=True),
                threading.Thread(target=append, args=("second", second), daemon=True),
            ]
            threads[0].start()
            threads[1].start()
            time.sleep(0.3)
            threads[2].start()
            found = []
            for _ in range(12):  # 3 s of looks
                time.sleep(0.25)
                found += watch.end_what_keeps_chain_appends_waiting()
            for thread in threads:
                thread.join(timeout=10)
            expected = {"holder": "ended", "first": "written", "second": "written"}
            assert outcomes == expected, (took_it_at_once, outcomes)
            assert [(h.pid, h.ended) for h in found] == [(holder_pid, True)], found


def test_a_replica_s_append_queued_ahead_of_a_waiting_one_is_never_ended(
    own_database: tuple[dict[str, str], ConnectionPool],
) -> None:
    """The false positive to avoid: a relay member holds the chain's lock (it queued first, then sleeps), another
    replica's plain append queued behind it and this one's behind that. Nothing but the relay member is ended; the
    other replica's append gets the lock before this one's."""
    env, pool = own_database
    dsn = env["PG_VAULT_DSN"]
    own = ProcessSessions()
    watch = ChainLockWatch(pool, own_sessions=own.sessions)
    with (
        psycopg.connect(dsn) as first_member,
        psycopg.connect(dsn) as member,
        psycopg.connect(dsn, autocommit=True) as replica_append,
        psycopg.connect(dsn, autocommit=True) as our_append,
    ):
        own.note(our_append)
        member_pid = member.info.backend_pid
        first_member.execute("SELECT vault.lock_audit_chain()")
        order: list[str] = []

        def run(name: str, conn: psycopg.Connection, *statements: str) -> None:
            try:
                for statement in statements:
                    conn.execute(statement)
                order.append(name)
            except psycopg.Error as error:
                order.append(f"{name}: {type(error).__name__}")

        lock = "SELECT vault.lock_audit_chain()"
        threads = [
            threading.Thread(target=run, args=("member", member, lock, "SELECT pg_sleep(4)"), daemon=True),
            threading.Thread(target=run, args=("replica", replica_append, _APPEND), daemon=True),
            threading.Thread(target=run, args=("ours", our_append, _APPEND), daemon=True),
        ]
        threads[0].start()  # queued behind the first member
        time.sleep(0.1)
        first_member.commit()  # the member holds it now, having queued first
        time.sleep(0.1)
        threads[1].start()
        time.sleep(0.2)
        threads[2].start()
        found = []
        for _ in range(12):
            time.sleep(0.25)
            found += watch.end_what_keeps_chain_appends_waiting()
        for thread in threads:
            thread.join(timeout=10)
    assert [(h.pid, h.ended) for h in found] == [(member_pid, True)], found
    assert "member: AdminShutdown" in order and [o for o in order if not o.startswith("member")] == [
        "replica",
        "ours",
    ], order  # the other replica's append got the lock first, then ours
