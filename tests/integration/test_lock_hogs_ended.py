"""Sessions of the serving role filling PostgreSQL's shared lock table are ended (attack 29, F1; migration 0047).

One session of the serving role keeping thousands of nested savepoints that each wrote - one XID lock apiece in the
shared lock table - filled it (12,800 entries in 2 s at max_locks_per_transaction 64), and every vault call failed
for as long as it held: nothing ended it. The lock watch now ends any session of the role's logins holding more than
HOG_LOCKS entries, every 0.25 s, on a connection of its own that still works once the table is full.

Each test runs on a PostgreSQL cluster of its own: a full lock table breaks every other session of its cluster, and
a failure here must not wreck the rest of the suite. The filler is always stopped (its backend is signalled if its
connection cannot be closed) and each test has a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from devstack.postgres import Postgres, pg_ctl
from tests.conftest import RunningVault, client_channel, running_vault
from tests.integration.fresh_values import fresh_value
from tests.integration.own_cluster import cluster_of_its_own
from tests.integration.own_database import database_of_its_own, migrate_before
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from vault_service.adapters.postgres.lock_hogs import HOG_LOCKS, LockHogWatch

_WRITE = "SAVEPOINT a; SELECT vault.take_call_budget('hog-{n}', 'tokenize', 1, 1, 1000000, 1000000);"
"""The attacker's write (attack 29): a savepoint never released, a new call-budget row (a client no one uses)."""
_ENDED_LINE = "entries of PostgreSQL's lock table"


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, with the vault's settings (deploy/postgres/tokenvault.conf)."""
    with cluster_of_its_own(tmp_path) as postgres:
        yield postgres


class Filler:
    """The attacker: one session of the serving role opening nested savepoints that each write, in batches of 500.

    Stops at `most` savepoints, when told, or when its session is ended. `ended_after`: seconds from its first batch to
    the error that ended its session (None: not ended). `refused`: batches the full table refused (it keeps going,
    one savepoint at a time, retaking what frees up, as the attacker did).
    """

    def __init__(self, dsn: str, most: int, seconds: float, write: str = _WRITE) -> None:
        self.write = write
        """The statement sent, `{n}` numbered: a savepoint and a write (migration 0048's tests: the ETL's)."""
        self.conn = psycopg.connect(dsn)
        self.pid = self.conn.info.backend_pid
        self.most, self.seconds = most, seconds
        self.nested = 0
        self.refused = 0
        self.ended_after: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lock-table-filler", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        batch = 500
        try:
            while self.nested < self.most and not self.stop.is_set() and time.monotonic() - started < self.seconds:
                try:
                    self.conn.execute("".join(self.write.format(n=self.nested + i) for i in range(batch)).encode())
                    self.nested += batch
                except psycopg.errors.OutOfMemory:
                    self.refused += 1
                    self.conn.execute("ROLLBACK TO SAVEPOINT a")  # the failed one; the others stay open
                    self.nested += batch  # names used
                    batch = 1
                    time.sleep(0.001)
        except psycopg.OperationalError:  # its session was ended
            self.ended_after = time.monotonic() - started

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Stop it whatever its state: told, then its backend signalled (as root, or the cluster's owner), closed."""
        self.stop.set()
        self.thread.join(5)
        if self.thread.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGTERM)
            self.thread.join(10)
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


@contextlib.contextmanager
def filling(dsn: str, most: int, seconds: float) -> Iterator[Filler]:
    filler = Filler(dsn, most, seconds)
    try:
        yield filler
    finally:
        filler.close()


def _calls(vault: RunningVault, env: dict[str, str], token: str, value: str, seconds: float) -> list[tuple[str, str]]:
    """Tokenize (a new IP) and Detokenize (`token`) alternately for `seconds`, 2 s deadline each: (call, outcome)."""
    out: list[tuple[str, str]] = []
    with (
        client_channel(env, vault.address, "etl-service") as etl_channel,
        client_channel(env, vault.address, "fraud-investigator") as reveal_channel,
    ):
        etl, reveal = vault_pb2_grpc.TokenVaultStub(etl_channel), vault_pb2_grpc.TokenVaultStub(reveal_channel)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                item = vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=fresh_value(vault_pb2.TOKEN_TYPE_IP))
                reply = etl.Tokenize(vault_pb2.TokenizeRequest(items=[item]), timeout=2)
                out.append(("Tokenize", "ok" if reply.results[0].token else "no token"))
            except grpc.RpcError as e:
                out.append(("Tokenize", e.code().name))
            try:
                got = reveal.Detokenize(vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-HOG"), timeout=2)
                out.append(("Detokenize", "ok" if got.results[0].value.value == value else "wrong value"))
            except grpc.RpcError as e:
                out.append(("Detokenize", e.code().name))
            time.sleep(0.2)
    return out


def _issue(vault: RunningVault, env: dict[str, str]) -> tuple[str, str]:
    value = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with client_channel(env, vault.address, "etl-service") as channel:
        reply = vault_pb2_grpc.TokenVaultStub(channel).Tokenize(
            vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=value)]),
            timeout=10,
        )
    return reply.results[0].token, value


def _locks_by_pid(admin: psycopg.Connection) -> dict[int, int]:
    rows = admin.execute(
        "SELECT pid, count(*) FROM pg_catalog.pg_lock_status() WHERE pid IS NOT NULL GROUP BY pid"
    ).fetchall()
    return {int(pid): int(n) for pid, n in rows}


def _max_locks(pg: Postgres, per_transaction: int) -> None:
    """Set max_locks_per_transaction for the cluster and restart it."""
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(f"ALTER SYSTEM SET max_locks_per_transaction = {int(per_transaction)}")
    pg_ctl(pg.data_dir, pg.bindir, pg.run_as, "restart", pg.port)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("max_locks", [None, 64], ids=["shipped-512", "old-default-64"])
def test_a_serving_role_session_filling_the_lock_table_is_ended_and_the_vault_serves(
    stack_env: dict[str, str], private_postgres: Postgres, caplog: pytest.LogCaptureFixture, max_locks: int | None
) -> None:
    """Ended within 5 s and served throughout after; on the old code (no rule) the filler is never ended and, at the
    old default table size (64), every call fails while it holds (at 512 it had not filled the table in 30 s)."""
    pg = private_postgres
    if max_locks is not None:
        _max_locks(pg, max_locks)
    with caplog.at_level(logging.ERROR), running_vault(stack_env, TOKENVAULT_DATABASE_DSN=pg.vault_dsn) as vault:
        token, value = _issue(vault, stack_env)
        time.sleep(1.0)  # the watch's own connection is open and warm (its first look: 0.25 s after start)
        # Enough savepoints to fill the table at the shipped setting (about 100,000 entries at 512), 40 s at most.
        with filling(pg.vault_dsn, most=110_000, seconds=30.0) as filler:
            filler.start()
            filler.thread.join(35)
            during = _calls(vault, stack_env, token, value, 3.0)
            print(
                f"HOG: filler ended after {filler.ended_after} s with {filler.nested} savepoints sent,"
                f" {filler.refused} batches refused; calls after: {during}"
            )
        after = _calls(vault, stack_env, token, value, 1.0)
    assert filler.ended_after is not None and filler.ended_after < 5.0, "the filler was not ended within 5 s"
    assert during and all(outcome == "ok" for _, outcome in during + after), during + after
    ended = [r for r in caplog.records if _ENDED_LINE in r.getMessage()]
    assert len(ended) == 1 and ended[0].pid == filler.pid and ended[0].locks > HOG_LOCKS  # type: ignore[attr-defined]
    assert "take_call_budget" not in ended[0].getMessage() and "hog-" not in ended[0].getMessage()


@pytest.mark.timeout(180)
def test_the_rule_ends_the_filler_on_a_full_table_from_its_own_warm_connection(private_postgres: Postgres) -> None:
    """At the old setting (64), the table full before the rule looks: it still runs on its connection and ends it."""
    pg = private_postgres
    _max_locks(pg, 64)
    watch = LockHogWatch(lambda: psycopg.connect(pg.vault_dsn), lambda: frozenset(), lambda: frozenset())
    try:
        assert watch.end_lock_hogs() == []  # opened and warmed before the fill, as the vault's at its start
        with psycopg.connect(pg.vault_dsn, autocommit=True) as warm_view:
            warm_view.execute("SELECT count(*) FROM pg_catalog.pg_locks").fetchone()
            with filling(pg.vault_dsn, most=40_000, seconds=30.0) as filler:
                filler.start()
                deadline = time.monotonic() + 30
                while not filler.refused and filler.thread.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert filler.refused, "the table never filled"
                with pytest.raises(psycopg.OperationalError, match="out of shared memory"):
                    psycopg.connect(pg.vault_dsn).close()  # full: a new connection is refused
                try:  # what the pg_locks view does on a full table, for the record
                    warm_view.execute("SELECT count(*) FROM pg_catalog.pg_locks").fetchone()
                    view = "ran"
                except psycopg.Error as e:
                    view = type(e).__name__
                started = time.monotonic()
                hogs = watch.end_lock_hogs()
                took = time.monotonic() - started
                filler.thread.join(10)
                print(f"HOG full table: rule took {took * 1000:.0f} ms, found {hogs}; pg_locks view: {view}")
        assert [(h.pid, h.ended) for h in hogs] == [(filler.pid, True)]
        assert hogs[0].locks > 10_000
        assert filler.ended_after is not None
    finally:
        watch.close()


@pytest.mark.timeout(300)
def test_the_vaults_own_sessions_are_never_ended_by_the_rule(
    stack_env: dict[str, str], private_postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2,000-value Tokenize and a key job (a new data key, every row resealed) while the rule runs every 0.25 s."""
    pg = private_postgres
    peak: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            mine = {admin.info.backend_pid}
            while not stop.is_set():
                for pid, n in _locks_by_pid(admin).items():
                    if pid not in mine:
                        peak[pid] = max(peak.get(pid, 0), n)
                time.sleep(0.005)

    with caplog.at_level(logging.WARNING), running_vault(stack_env, TOKENVAULT_DATABASE_DSN=pg.vault_dsn) as vault:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            distinct: set[str] = set()
            while len(distinct) < 2000:  # random values collide now and then (2,000 of 15.6M: ~13% of runs)
                distinct.add(fresh_value(vault_pb2.TOKEN_TYPE_IP))
            values = sorted(distinct)
            with client_channel(stack_env, vault.address, "etl-service") as channel:
                reply = vault_pb2_grpc.TokenVaultStub(channel).Tokenize(
                    vault_pb2.TokenizeRequest(
                        items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=v) for v in values]
                    ),
                    timeout=60,
                )
            assert all(r.token for r in reply.results)
            rotation = vault.wired.rotation("admin:hog-test")
            rotation.rotate_encryption_key("CHG-HOG-1")
            assert rotation.reencrypt("CHG-HOG-1", batch_size=1000) >= 2000
            time.sleep(0.5)
        finally:
            stop.set()
            sampler.join(5)
    busiest = max(peak.values(), default=0)
    print(f"HOG own: the vault's busiest session held at most {busiest} lock-table entries (rule: over {HOG_LOCKS})")
    assert not [r for r in caplog.records if _ENDED_LINE in r.getMessage()]
    assert 0 < busiest < HOG_LOCKS // 4


@pytest.mark.timeout(120)
def test_the_rule_ends_no_other_roles_session_and_only_the_serving_role_may_run_it(private_postgres: Postgres) -> None:
    """An ETL session holding 400 savepoints' entries is left by the vault's rule (the vault's login may not end it:
    the operators' lock watchdog does, test_lock_watchdog.py); ETL, analysts, the watchdog and PUBLIC may not call
    vault.end_lock_hogs."""
    pg = private_postgres
    etl_write = (
        "SAVEPOINT a; INSERT INTO public.etl_quarantine (event_id, sqs_message_id, reason, detail)"
        " VALUES ('hog-{n}', 'a', 'a', 'a');"
    )
    watch = LockHogWatch(lambda: psycopg.connect(pg.vault_dsn), lambda: frozenset(), lambda: frozenset())
    try:
        with psycopg.connect(pg.etl_dsn) as etl, psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            etl.execute("".join(etl_write.format(n=n) for n in range(400)).encode())
            assert _locks_by_pid(admin)[etl.info.backend_pid] > HOG_LOCKS
            assert watch.end_lock_hogs() == []
            assert etl.execute("SELECT 1").fetchone() == (1,)  # still there
            etl.rollback()
            may = {
                role: admin.execute(
                    "SELECT has_function_privilege(%s, 'vault.end_lock_hogs(integer[])', 'EXECUTE')", (role,)
                ).fetchone()
                for role in (
                    "tokenvault_vault",
                    "tokenvault_etl",
                    "tokenvault_analyst",
                    "tokenvault_watchdog",
                    "public",
                )
            }
        assert may == {
            "tokenvault_vault": (True,),
            "tokenvault_etl": (False,),
            "tokenvault_analyst": (False,),
            "tokenvault_watchdog": (False,),
            "public": (False,),
        }
    finally:
        watch.close()


def test_before_migration_0047_the_rule_looks_for_it_every_30_s_not_at_every_look(stack_env: dict[str, str]) -> None:
    """A vault of this release on the schema before 0047: the rule is off, said once, and does not log in again at
    every 0.25 s look to find the function still missing (before: a new connection, SCRAM and all, each look)."""
    with database_of_its_own(stack_env, "before47") as env:
        assert migrate_before(env, "0047")[-1] < "0047"
        opened: list[psycopg.Connection] = []

        def connect() -> psycopg.Connection:
            opened.append(psycopg.connect(env["PG_VAULT_DSN"]))
            return opened[-1]

        watch = LockHogWatch(connect, lambda: frozenset(), lambda: frozenset())
        for _ in range(8):  # two seconds of looks
            assert watch.end_lock_hogs() == []
        assert watch.missing and len(opened) == 1, len(opened)
        assert all(conn.closed for conn in opened)
