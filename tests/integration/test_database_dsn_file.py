"""Review 34, R34-12: the vault's and the ETL's credentials rotate under them, and they log in again with the new ones.

In Kubernetes each service's login is Vault's (database secrets engine, `database/creds/tokenvault-vault`,
`database/creds/tokenvault-etl`): the agent renders it into a file and renders it again with a new login as each
lease ends, and Vault drops the old login. Both services read their DSN once at the start (a sourced env file), so
once the old login was dropped and its sessions ended, every new connection was refused until the pod restarted.
Now TOKENVAULT_DATABASE_DSN_FILE / ETL_DATABASE_DSN_FILE name the file, read again at every new connection. On the
session's stack (its PostgreSQL, OpenBao and SQS); each login is the test's own and dropped at its end.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from devstack.events import send_events
from devstack.sqs import sqs_client
from devstack.stack import vault_service_env
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, running_vault, vault_config
from tests.integration.etl_landings import drained_within, events, where_each_event_landed
from tests.integration.fresh_values import issue_fresh_ip
from tests.integration.test_lock_watchdog_dsn_file import _render
from tokenvault_common.database_dsn import DsnFile
from tokenvault_common.pg_pool import LoginCheck
from vault_service.adapters.postgres.lock_hogs import SERVING_ROLE_HOGS
from vault_service.bootstrap import job_liveness


class Logins:
    """Logins made as Vault's database engine makes them (`IN ROLE` the service's group role), dropped at the end."""

    def __init__(self, admin: psycopg.Connection, service_dsn: str, role: str) -> None:
        self.admin, self.service_dsn, self.role = admin, service_dsn, role
        self.made: list[str] = []
        self.passwords: list[str] = []
        self.revoked: list[int] = []
        """The oids of the logins dropped (pg_stat_activity names no user for a session of a dropped one)."""

    def make(self) -> tuple[str, str]:
        """A new login (its name, its DSN): the service's DSN with that user and a random password."""
        name = f"v-{self.role}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(18)
        self.admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(password), sql.Identifier(self.role)
            )
        )
        self.made.append(name)
        self.passwords.append(password)
        return name, make_conninfo(self.service_dsn, user=name, password=password)

    def revoke(self, name: str) -> int:
        """As Vault revokes a lease: the login dropped, then every session it had ended; how many were ended."""
        (oid,) = self.admin.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (name,)).fetchone() or (None,)
        self.admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        self.revoked.append(int(oid))
        ended = self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = %s", (oid,)
        ).fetchall()
        assert ended and all(row[0] for row in ended), ended
        return len(ended)

    def sessions(self, name: str) -> list[tuple[str, str]]:
        """(application_name, last statement) of each session of `name`."""
        rows = self.admin.execute(
            "SELECT application_name, query FROM pg_stat_activity WHERE usename = %s", (name,)
        ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]

    def revoked_sessions(self) -> int:
        """The sessions still there of the logins dropped."""
        row = self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usesysid = ANY(%s::oid[])", (self.revoked,)
        ).fetchone()
        return int(row[0]) if row else 0

    def drop_all(self) -> None:
        for name in self.made:
            self.admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))


@pytest.fixture
def admin(stack_env: dict[str, str]) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        yield conn


def _wait_for(condition: Callable[[], bool], what: str, seconds: float) -> float:
    """Seconds until `condition()` holds; fails the test after `seconds`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.timeout(60)
def test_the_vault_logs_in_with_the_rotated_login_of_its_dsn_file_and_serves(
    stack_env: dict[str, str], admin: psycopg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent renders a new login into the file, Vault drops the old one and its sessions end: the vault's pool,
    its lock watch's warm connection and a key job's session all log in as the new login, a Tokenize is answered
    and the audit upkeep checkpoints. Before, the DSN was read once: every new connection was refused."""
    logins = Logins(admin, stack_env["PG_VAULT_DSN"], "tokenvault_vault")
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    settings = {
        "TOKENVAULT_DATABASE_DSN": "",
        "TOKENVAULT_DATABASE_DSN_FILE": str(dsn_file),
        # the session's database: its exported copy is the session's
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": vault_service_env(stack_env)["TOKENVAULT_AUDIT_CHECKPOINT_FILE"],
        "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
    }
    try:
        first, first_dsn = logins.make()
        _render(dsn_file, first_dsn)
        hog_rule = SERVING_ROLE_HOGS.function.partition("(")[0]  # what the lock watch's warm connection runs
        with running_vault(stack_env, **settings) as vault:
            issue_fresh_ip(stack_env, vault)
            _wait_for(lambda: any(hog_rule in query for _, query in logins.sessions(first)), "the lock watch", 5)
            # The lease ends: the agent renders the next login's DSN, Vault drops the old login and its sessions end.
            second, second_dsn = logins.make()
            _render(dsn_file, second_dsn)
            ended = logins.revoke(first)
            assert ended >= 2  # the pool's and the lock watch's
            cut = time.monotonic()
            issue_fresh_ip(stack_env, vault)  # a Tokenize answered: the pool logged in again as the new login
            served = time.monotonic() - cut
            warm = _wait_for(
                lambda: any(hog_rule in query for _, query in logins.sessions(second)),
                "the lock watch's warm connection as the new login",
                5,
            )
            vault.wait_for_checkpoint(10)  # an upkeep round after the rotation anchored that Tokenize's audit row
            liveness = job_liveness(vault_config(stack_env, **settings))  # a key job's own session
            try:
                liveness.interrupted()
                assert "tokenvault-key-job" in {app for app, _ in logins.sessions(second)}
            finally:
                liveness.release()
            assert logins.revoked_sessions() == 0
            assert "tokenvault-vault" in {app for app, _ in logins.sessions(second)}
            print(
                f"VAULT: {ended} sessions of the old login ended; a Tokenize answered {served:.2f} s later, the lock"
                f" watch logged in as the new login within {warm:.2f} s"
            )
        _nothing_secret_logged(caplog, logins)
    finally:
        logins.drop_all()


@pytest.mark.timeout(60)
def test_the_vault_retires_its_connections_of_a_login_dropped_under_them_and_serves(
    stack_env: dict[str, str], admin: psycopg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Vault's default revocation drops the login and ends none of its sessions, after the agent rendered the next
    login: the pool's connections of the old login passed its check and every statement on them was refused - 10 of
    10 Tokenize calls INTERNAL (review 36, R36-4). Now the pool retires a connection of a login its DSN file no
    longer names (and drains the rest): each Tokenize after the drop is answered, and no session of the dropped
    login is left."""
    logins = Logins(admin, stack_env["PG_VAULT_DSN"], "tokenvault_vault")
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    settings = {
        "TOKENVAULT_DATABASE_DSN": "",
        "TOKENVAULT_DATABASE_DSN_FILE": str(dsn_file),
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": vault_service_env(stack_env)["TOKENVAULT_AUDIT_CHECKPOINT_FILE"],
    }
    try:
        first, first_dsn = logins.make()
        _render(dsn_file, first_dsn)
        with running_vault(stack_env, **settings) as vault:
            for _ in range(3):
                issue_fresh_ip(stack_env, vault)  # the pool's connections: the first login's
            (oid,) = admin.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (first,)).fetchone() or (None,)
            second, second_dsn = logins.make()
            _render(dsn_file, second_dsn)
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(first)))  # its sessions left, as Vault's
            outcomes, took = [], []
            for _ in range(5):
                began = time.monotonic()
                try:
                    issue_fresh_ip(stack_env, vault)
                    outcomes.append("ok")
                except Exception as error:  # what each call ends with is the point
                    outcomes.append(type(error).__name__)
                took.append(round(time.monotonic() - began, 2))
            left = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usesysid = %s", (oid,)).fetchone()
            serving = {app for app, _ in logins.sessions(second)}
            print(f"VAULT: after the drop {outcomes}, each in {took} s; the dropped login's sessions left {left}")
    finally:
        logins.drop_all()
    assert outcomes == ["ok"] * 5, outcomes
    assert left == (0,) and "tokenvault-vault" in serving, (left, serving)


@pytest.mark.timeout(60)
def test_the_vault_serves_on_its_old_login_while_the_next_ones_slots_are_taken_and_moves_once_they_free(
    stack_env: dict[str, str], admin: psycopg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can read the rendered file (a sidecar on the secrets volume) can take every slot of the next login
    before the vault uses it. The pool retired its connections of the old, still valid login at the rendering and
    could open none: 3 of 3 Tokenize DEADLINE_EXCEEDED until the copy let go (attack 35, N6). Now the old login's
    connections keep serving until the next login connects, the ERROR names the login whose slots are taken (once),
    and the pool moves to it once the copy lets go."""
    logins = Logins(admin, stack_env["PG_VAULT_DSN"], "tokenvault_vault")
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    settings = {
        "TOKENVAULT_DATABASE_DSN": "",
        "TOKENVAULT_DATABASE_DSN_FILE": str(dsn_file),
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": vault_service_env(stack_env)["TOKENVAULT_AUDIT_CHECKPOINT_FILE"],
    }

    def serving(name: str) -> int:
        return sum(app == "tokenvault-vault" for app, _ in logins.sessions(name))

    try:
        first, first_dsn = logins.make()
        _render(dsn_file, first_dsn)
        with running_vault(stack_env, **settings) as vault:
            issue_fresh_ip(stack_env, vault)
            second, second_dsn = logins.make()
            admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 2").format(sql.Identifier(second)))
            copies = [psycopg.connect(second_dsn, autocommit=True) for _ in range(2)]  # the copy: every slot
            _render(dsn_file, second_dsn)
            outcomes, took = [], []
            for i in range(4):
                if i == 3:
                    time.sleep(LoginCheck.RETRY_SECONDS)  # the next login tried again (and logged no more)
                began = time.monotonic()
                try:
                    issue_fresh_ip(stack_env, vault)
                    outcomes.append("ok")
                except Exception as error:  # what each call ends with is the point
                    outcomes.append(type(error).__name__)
                took.append(round(time.monotonic() - began, 2))
            on_old, on_next = serving(first), serving(second)
            for copy in copies:
                copy.close()
            time.sleep(LoginCheck.RETRY_SECONDS)
            moved_in = _wait_for(
                lambda: issue_fresh_ip(stack_env, vault) and serving(second) > 0 and serving(first) == 0,
                "the pool on the next login once its slots are free",
                5,
            )
    finally:
        logins.drop_all()
    print(
        f"N6: next login's slots taken: {outcomes} in {took} s, sessions old/next {on_old}/{on_next};"
        f" slots freed: the pool on the next login {moved_in:.2f} s later"
    )
    assert outcomes == ["ok"] * 4, outcomes
    assert on_old >= 1 and on_next == 0, (on_old, on_next)
    taken = [r for r in caplog.records if r.levelname == "ERROR" and second in r.getMessage()]
    assert len(taken) == 1, [r.getMessage() for r in taken]
    assert "too many connections for role" in taken[0].getMessage()
    assert "security team" in taken[0].getMessage()
    _nothing_secret_logged(caplog, logins)


@pytest.mark.timeout(30)
def test_a_pool_keeps_no_connection_of_a_dropped_login_while_the_next_logins_slots_are_taken(
    stack_env: dict[str, str], admin: psycopg.Connection, tmp_path: Path
) -> None:
    """LoginCheck keeps an old login's connections while the file's login cannot connect (attack 35, N6) - but not
    once the old login is dropped under them (R36-4): that pool gives no connection at all, never one of the dropped
    login; the copy gone, a connection of the next login."""
    logins = Logins(admin, stack_env["PG_VAULT_DSN"], "tokenvault_vault")
    dsn_file = tmp_path / "dsn"
    try:
        first, first_dsn = logins.make()
        _render(dsn_file, first_dsn)
        second, second_dsn = logins.make()
        admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1").format(sql.Identifier(second)))
        check = LoginCheck(DsnFile(dsn_file, "DSN_FILE", {}))
        conninfo = DsnFile(dsn_file, "DSN_FILE", {})
        with (
            psycopg.connect(second_dsn, autocommit=True) as copy,
            check.attach(ConnectionPool(conninfo, min_size=1, max_size=1, check=check, timeout=1.5)) as pool,
        ):
            pool.wait(5)
            _render(dsn_file, second_dsn)
            with pool.connection() as conn:
                assert conn.info.user == first  # the next login refused: the old one serves
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # as it came
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(first)))  # its sessions left, as Vault's
            with pytest.raises(PoolTimeout), pool.connection() as conn:
                pytest.fail(f"a connection of {conn.info.user} given")
            copy.close()
            with pool.connection(timeout=10) as conn:  # the pool's own reconnection, as its backoff goes
                assert conn.info.user == second
    finally:
        logins.drop_all()


def _nothing_secret_logged(caplog: pytest.LogCaptureFixture, logins: Logins) -> None:
    """No log line quotes a login's password or DSN."""
    text = caplog.text
    assert text  # the services' lines were captured
    for password in logins.passwords:
        assert password not in text


@pytest.mark.timeout(60)
def test_the_etl_logs_in_with_the_rotated_login_of_its_dsn_file_and_loads(
    stack_env: dict[str, str],
    vault: RunningVault,
    admin: psycopg.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ETL's login rotates between two batches, the old one dropped and its sessions ended: the next batch is
    loaded as the new login. Before, the DSN was read once: the pool could not open a connection again."""
    logins = Logins(admin, stack_env["PG_ETL_DSN"], "tokenvault_etl")
    dsn_file = tmp_path / "secrets" / "dsn"
    dsn_file.parent.mkdir()
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=5),
        "ETL_DATABASE_DSN": "",
        "ETL_DATABASE_DSN_FILE": str(dsn_file),
    }
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    try:
        first, first_dsn = logins.make()
        _render(dsn_file, first_dsn)
        with etl_consumer(etl_env) as etl:
            etl.wired.store.check_access(etl.wired.database_dsn)  # the start check, as the new login too below
            before = events(20, malformed_rate=0.0)
            send_events(sqs, etl.queue_url, before)
            drained_within(etl, 10)
            assert logins.sessions(first)
            second, second_dsn = logins.make()
            _render(dsn_file, second_dsn)
            ended = logins.revoke(first)
            after = events(20, malformed_rate=0.0)
            send_events(sqs, etl.queue_url, after)
            cut = time.monotonic()
            drained_within(etl, 10)
            loaded = time.monotonic() - cut
            rows, _ = where_each_event_landed(stack_env["PG_ADMIN_DSN"], before + after)
            assert sorted(rows) == sorted(e.event_id for e in before + after)
            assert {app for app, _ in logins.sessions(second)} == {"tokenvault-etl"}
            assert logins.revoked_sessions() == 0
            etl.wired.store.check_access(etl.wired.database_dsn)
            print(
                f"ETL: {ended} sessions of the old login ended; the next batch loaded as the new login in"
                f" {loaded:.2f} s"
            )
        _nothing_secret_logged(caplog, logins)
    finally:
        logins.drop_all()
