"""The lock watch sees and ends sessions of every login of the serving role, and nobody else's (review 33, R33-6).

The shipped Kubernetes deployment logs each vault pod in as a user Vault's database engine makes `IN ROLE
tokenvault_vault`. The vault's own login could neither see such a session's transaction in pg_stat_activity nor
signal it, so a login made that way that inserted one audit row and stayed idle froze every reveal for as long as
it liked (0 of 7 over 20 s, never ended). Migration 0042's owner-defined functions list and end sessions of members
of tokenvault_vault only; the watch uses them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from tests.conftest import RunningVault
from tests.integration.fresh_values import Revealer, issue_fresh_ip
from tests.integration.own_database import EVERY_DSN, database_of_its_own, migrate_before
from tests.integration.pg_backends import session_alive
from vault_service.adapters.postgres.chain_lock import NOT_SEEN, ChainLockWatch
from vault_service.adapters.postgres.keys import KEYS_LOCK

_APPEND = "INSERT INTO vault.audit_log (client, action, item_count, outcome) VALUES ('x', 'detokenize', 0, 'ok')"


@contextmanager
def _login_of_the_role(env: dict[str, str]) -> Iterator[str]:
    """A login made as Vault's database engine makes one (`IN ROLE tokenvault_vault`): its DSN; dropped after."""
    login = f"v_r33_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE tokenvault_vault")
    parts = conninfo_to_dict(env["PG_VAULT_DSN"])
    parts.update(user=login, password=password)
    try:
        yield make_conninfo("", **parts)
    finally:
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (login,)
            ).fetchall()
            admin.execute(f"DROP ROLE {login}")


def test_another_login_of_the_role_holding_the_chain_lock_is_ended_and_reveals_served_again(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    value, token = issue_fresh_ip(stack_env, vault)
    reveal = Revealer(stack_env, vault, token, "CASE-R33-6")  # no transparent retry
    with _login_of_the_role(stack_env) as dsn, psycopg.connect(dsn) as rogue:
        rogue.execute(_APPEND)  # the chain trigger's lock, held to commit; then idle in the transaction
        started = time.monotonic()
        failed = 0
        while True:
            try:
                answer = reveal(timeout=10)
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                failed += 1
                assert time.monotonic() - started < 20, "the other login's session was never ended (before: never)"
        served_after = time.monotonic() - started
        assert answer == value
        assert not session_alive(rogue)  # ended by the vault's upkeep: its transaction and row gone
    reveal.close()
    assert served_after < 12  # ended once an append waited 1 s for it (R33-1), or held 5 s idle (a 2 s round)
    print(f"\nanother login holding the chain lock: {failed} reveal(s) refused, served after {served_after:.1f} s")


def test_the_functions_list_and_end_members_sessions_only(stack_env: dict[str, str]) -> None:
    """As the vault's login: a member login's session holding the chain lock is listed and ended; the ETL's, an
    analyst's, a superuser's (holding the key-generation lock) and the caller's own are neither listed nor ended,
    nor is a member's session that holds nothing and keeps no one waiting.

    In a database of its own: the member is ended once its transaction is 5 s old (migration 0050), and no vault's
    watch may end it first there."""
    with database_of_its_own(stack_env, "r33fn", dsns=EVERY_DSN, migrated=True) as env:
        _functions_list_and_end(env)


def _functions_list_and_end(env: dict[str, str]) -> None:
    with (
        _login_of_the_role(env) as member_dsn,
        psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault,
        psycopg.connect(member_dsn) as member,
        psycopg.connect(member_dsn) as member_idle,
        psycopg.connect(env["PG_ETL_DSN"]) as etl,
        psycopg.connect(env["PG_ANALYST_DSN"]) as analyst,
        psycopg.connect(env["PG_ADMIN_DSN"]) as superuser,
        psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as look,
    ):
        member.execute(_APPEND)
        member_idle.execute("SELECT 1")  # in a transaction, holding no watched lock
        etl.execute("SELECT 1")
        analyst.execute("SELECT 1")
        superuser.execute("SELECT pg_advisory_xact_lock(%s)", (KEYS_LOCK,))  # holds a watched lock
        conns = {
            "member": member,
            "member_idle": member_idle,
            "etl": etl,
            "analyst": analyst,
            "superuser": superuser,
            "own": vault,
        }
        pids = {name: conn.info.backend_pid for name, conn in conns.items()}
        started = {
            name: look.execute(
                "SELECT backend_start, xact_start FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            for name, pid in pids.items()
        }
        listed = {int(row[0]) for row in vault.execute("SELECT pid FROM vault.role_sessions()")}
        assert pids["member"] in listed and pids["member_idle"] in listed
        assert not listed & {pids[n] for n in ("etl", "analyst", "superuser", "own")}, "a non-member's session listed"
        for name in ("etl", "analyst", "superuser", "own", "member_idle"):
            backend_start, xact_start = started[name]  # type: ignore[misc]
            row = vault.execute(
                "SELECT vault.end_role_session(%s, %s, %s)", (pids[name], backend_start, xact_start)
            ).fetchone()
            assert row == (None,), name
        for name in ("etl", "analyst", "superuser", "member_idle"):
            assert session_alive(conns[name]), name
        backend_start, xact_start = started["member"]  # type: ignore[misc]
        wrong = vault.execute(  # another transaction's start: not ended
            "SELECT vault.end_role_session(%s, %s, %s)", (pids["member"], backend_start, backend_start)
        ).fetchone()
        assert wrong == (None,) and session_alive(member) is True
        _until_older_than(look, xact_start, 5.0)  # migration 0050: held 5 s in its transaction, as the watch's rule
        ended = vault.execute(
            "SELECT vault.end_role_session(%s, %s, %s)", (pids["member"], backend_start, xact_start)
        ).fetchone()
        assert ended == (True,)
        time.sleep(0.2)
        assert not session_alive(member)
        superuser.rollback()


def _until_older_than(look: psycopg.Connection, since: object, seconds: float) -> None:
    """Sleep until `since` (a server timestamp) is `seconds` old on the server's clock."""
    row = look.execute("SELECT extract(epoch FROM clock_timestamp() - %s::timestamptz)", (since,)).fetchone()
    time.sleep(max(0.0, seconds + 0.1 - float(row[0])))  # type: ignore[index]


def _session(look: psycopg.Connection, pid: int) -> tuple[object, object]:
    row = look.execute("SELECT backend_start, xact_start FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_member_login_may_not_end_another_logins_session_before_the_watchs_own_bounds(
    stack_env: dict[str, str],
) -> None:
    """Attack 30, F2: one pod's login looped vault.end_role_session over the other pods' sessions and ended their
    appends, new-token inserts and key operations mid-commit (7-8 of 10 calls failed, 3 of 3 rotations). Since
    migration 0050 the function ends nothing the vault's own rules would not: a holder of the chain's lock whose
    transaction is under 5 s old, or a key-generation lock holder that a member has waited for under 1 s, is
    refused (false) and goes on; the same sessions past 5 s / 1 s are ended, as the watch ends them."""
    with (
        database_of_its_own(stack_env, "f2floor", migrated=True) as env,  # no vault, no watch of its own here
        _login_of_the_role(env) as pod_a,
        _login_of_the_role(env) as pod_b,
        psycopg.connect(pod_a, autocommit=True) as attacker,
        psycopg.connect(pod_a) as waiter,  # the attacker's own member session, queued behind pod B's key work
        psycopg.connect(pod_b) as append,  # pod B's append: the chain's lock, held to its commit
        psycopg.connect(pod_b) as key_work,  # pod B's key operation: the key-generation lock, exclusive
        psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as look,
    ):
        end = "SELECT vault.end_role_session(%s, %s, %s)"
        append.execute(_APPEND)
        key_work.execute("SELECT vault.lock_key_generation()")
        append_pid, key_pid = append.info.backend_pid, key_work.info.backend_pid
        append_session, key_session = _session(look, append_pid), _session(look, key_pid)

        # A holder, young: refused, every time, and it commits its append.
        for _ in range(20):
            assert attacker.execute(end, (append_pid, *append_session)).fetchone() == (False,)
        assert session_alive(append)

        # A member kept waiting behind the key work, under 1 s: refused.
        waiter.execute("SET lock_timeout = '10s'")
        queued: list[BaseException | None] = []

        def queue() -> None:
            try:
                waiter.execute("SELECT vault.lock_key_generation_shared()")
                queued.append(None)
            except psycopg.Error as error:
                queued.append(error)

        thread = threading.Thread(target=queue, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        queued_sql = "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted AND waitstart IS NOT NULL"
        while not look.execute(queued_sql, (waiter.info.backend_pid,)).fetchone():
            assert time.monotonic() < deadline, "the attacker's session never queued"
            time.sleep(0.02)
        (waited,) = look.execute(  # type: ignore[misc]
            "SELECT waitstart FROM pg_locks WHERE pid = %s AND NOT granted", (waiter.info.backend_pid,)
        ).fetchone()
        assert attacker.execute(end, (key_pid, *key_session)).fetchone() == (False,)
        assert session_alive(key_work)

        # Waited 1 s: the watch's rule (a key operation, or an append, kept waiting 1 s) - ended.
        _until_older_than(look, waited, 1.0)
        assert attacker.execute(end, (key_pid, *key_session)).fetchone() == (True,)
        thread.join(timeout=10)
        assert queued == [None]
        waiter.rollback()
        assert not session_alive(key_work)

        # Held 5 s in its transaction: the holder rule - ended.
        assert session_alive(append)
        _until_older_than(look, append_session[1], 5.0)
        assert attacker.execute(end, (append_pid, *append_session)).fetchone() == (True,)
        time.sleep(0.2)
        assert not session_alive(append)


def test_only_the_serving_role_may_execute_the_functions(stack_env: dict[str, str]) -> None:
    functions = ("vault.role_sessions()", "vault.end_role_session(integer, timestamptz, timestamptz)")
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        for function in functions:
            row = admin.execute(
                "SELECT has_function_privilege('tokenvault_vault', %(f)s, 'EXECUTE'),"
                " has_function_privilege('tokenvault_etl', %(f)s, 'EXECUTE'),"
                " has_function_privilege('tokenvault_analyst', %(f)s, 'EXECUTE'),"
                " has_function_privilege('public', %(f)s, 'EXECUTE')",
                {"f": function},
            ).fetchone()
            assert row == (True, False, False, False), function
    with psycopg.connect(stack_env["PG_ETL_DSN"], autocommit=True) as etl:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            etl.execute("SELECT * FROM vault.role_sessions()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            etl.execute("SELECT vault.end_role_session(1, now(), now())")


def test_an_owner_that_may_not_see_or_signal_is_said_once_and_the_holder_reported(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """On a managed PostgreSQL where 0042 could not grant pg_read_all_stats/pg_signal_backend to the owner: one
    warning line naming what it lacks, and the other login's holder reported as not ended (not silently missed)."""
    with (
        database_of_its_own(stack_env, "blind", migrated=True) as env,
        ConnectionPool(env["PG_VAULT_DSN"], min_size=1, max_size=2, kwargs={"autocommit": True}) as pool,
        _login_of_the_role(env) as dsn,
        psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        admin.execute("REVOKE pg_read_all_stats, pg_signal_backend FROM tokenvault_owner")  # the cluster's: put back
        try:
            watch = ChainLockWatch(pool, held_seconds=0.3)
            with psycopg.connect(dsn) as rogue, caplog.at_level(logging.WARNING, "vault_service.adapters.postgres"):
                rogue.execute(_APPEND)
                assert watch.end_stale_holders() == []
                time.sleep(0.4)
                (found,) = watch.end_stale_holders()
                assert not found.ended and found.not_ended_because == NOT_SEEN
                assert session_alive(rogue)
            # This watch's lines (this thread's): the session's own vault, running in this process, looks every
            # 0.25 s too and says it once for itself.
            lacking = [
                r.getMessage()
                for r in caplog.records
                if "lacks" in r.getMessage() and r.thread == threading.get_ident()
            ]
            assert len(lacking) == 1 and "pg_read_all_stats and pg_signal_backend" in lacking[0], lacking
            assert watch.blind is not None
        finally:
            admin.execute("GRANT pg_read_all_stats, pg_signal_backend TO tokenvault_owner")
        watch.end_stale_holders()
        assert watch.blind is None


def test_before_migration_0042_the_watch_still_ends_its_own_login_s_holders_and_says_what_it_misses(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The service is rolled out before the migrations: without 0042 the watch works as before (its own login)."""
    with database_of_its_own(stack_env, "before42") as env:
        migrate_before(env, "0042")
        with (
            ConnectionPool(env["PG_VAULT_DSN"], min_size=1, max_size=2, kwargs={"autocommit": True}) as pool,
            psycopg.connect(env["PG_VAULT_DSN"]) as rogue,
            caplog.at_level(logging.WARNING, "vault_service.adapters.postgres"),
        ):
            watch = ChainLockWatch(pool, held_seconds=0.3)
            rogue.execute(_APPEND)
            assert watch.end_stale_holders() == []
            time.sleep(0.4)
            (found,) = watch.end_stale_holders()
            assert found.ended and found.pid == rogue.info.backend_pid
            assert not session_alive(rogue)
        assert any("migration 0042 is not applied" in r.getMessage() for r in caplog.records)
