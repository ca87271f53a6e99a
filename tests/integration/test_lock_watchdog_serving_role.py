"""Attack 30, F4 against the operators' lock watchdog: the serving role switching its own lock-hog rule off.

The attack (attack 30, F4; measured before the watchdog: 94,500 savepoints, the table full after 11.5 s, 6 of 6
fillers never ended, 6 of 6 vault calls UNAVAILABLE): a login of tokenvault_vault holds every connection slot its
CONNECTION LIMIT (0046) leaves, ends the vault's own warm hog-watch connection (it may signal its own login's
backends) and retakes the slot it freed, so the vault's rule (0047) can never log in again; then fills the shared
lock table with nested savepoints from six of the held sessions. The watchdog (0048) runs as a login of its own,
not a member of tokenvault_vault, with its own CONNECTION LIMIT: the serving role may neither end its session nor
take its slots, so it ends the fillers. Real vault, the watchdog process as the stack starts it, a PostgreSQL
cluster of the test's own (a full table breaks every session of its cluster); every session is always let go.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import Postgres
from tests.conftest import running_vault
from tests.integration.own_cluster import cluster_of_its_own
from tests.integration.test_lock_hogs_ended import _ENDED_LINE as _VAULT_RULE_ENDED
from tests.integration.test_lock_hogs_ended import _calls, _issue
from tests.integration.test_lock_watchdog import _ENDED_LINE, _lines, watchdog
from tokenvault_common.migrations import MEMBER_LOGIN_CONNECTION_LIMIT, create_member_logins

_WRITE = "SAVEPOINT a; SELECT vault.take_call_budget('a30f4-{n}', 'tokenize', 1, 1, 1000000, 1000000);"
"""The attacker's write (attack 30, F4; attack 29, F1): a savepoint never released, a call-budget row apiece."""
_SLOTS = """
SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int,
       (SELECT coalesce(sum(rolconnlimit), 0)::int FROM pg_roles
        WHERE rolcanlogin AND NOT rolsuper AND rolconnlimit > 0),
       (SELECT count(*)::int FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolconnlimit = -1)
"""
"""Non-superuser slots; every non-superuser login's limit together; logins without a limit."""
FILLERS = 6


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    with cluster_of_its_own(tmp_path / "pg") as postgres:
        yield postgres


class HeldFiller:
    """One of the attacker's held sessions filling the table, batches of 500 nested savepoints, until told or ended."""

    def __init__(self, conn: psycopg.Connection, base: int, stop: threading.Event | None = None) -> None:
        self.conn, self.base = conn, base
        self.pid = conn.info.backend_pid
        self.savepoints = 0
        self.refused = 0
        self.ended_after: float | None = None
        self.stop = stop or threading.Event()
        self.thread = threading.Thread(target=self._run, name="a30-f4-filler", daemon=True)
        self.started = 0.0

    def _run(self) -> None:
        self.conn.autocommit = False
        batch = 500
        try:
            while not self.stop.is_set():
                try:
                    n = self.base + self.savepoints
                    self.conn.execute("".join(_WRITE.format(n=n + i) for i in range(batch)).encode())
                    self.savepoints += batch
                except psycopg.errors.OutOfMemory:
                    self.refused += 1
                    self.conn.execute("ROLLBACK TO SAVEPOINT a")
                    self.savepoints += batch
                    batch = 1
                    time.sleep(0.01)
        except psycopg.OperationalError:  # its session was ended
            self.ended_after = time.monotonic() - self.started

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()


def _refill(dsn: str, base: int, stop: threading.Event, ended: list[float], pids: set[int]) -> None:
    """The attacker keeping at it: a filler ended, its slot is retaken at once and the fill starts again."""
    while not stop.is_set():
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:
            time.sleep(0.002)
            continue
        filler = HeldFiller(conn, base, stop)
        pids.add(filler.pid)
        base += 1_000_000
        filler.started = time.monotonic()
        filler._run()
        if filler.ended_after is not None:
            ended.append(filler.ended_after)
        with contextlib.suppress(psycopg.Error):
            conn.close()


def _connect_until_refused(dsn: str, into: list[psycopg.Connection], most: int = 200) -> str:
    """Open sessions of the DSN's login until the server refuses one; the refusal's last line."""
    for _ in range(most):
        try:
            into.append(psycopg.connect(dsn, autocommit=True))
        except psycopg.OperationalError as e:
            return str(e).strip().splitlines()[-1].split("FATAL:")[-1].strip()
    return "never refused"


@pytest.mark.timeout(300)
def test_the_serving_role_switching_its_own_hog_rule_off_is_stopped_by_the_watchdog(
    stack_env: dict[str, str], private_postgres: Postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack 30 F4's steps, exactly, with the watchdog running: its session is not the serving role's to end
    (pg_terminate_backend, vault.end_role_session, vault.end_lock_hogs, watchdog.end_lock_hogs), its login's slots stay
    its own while every other login holds all of its slots (it holds them itself: attack 33, A4), and it ends the 6
    fillers within 5 s; vault calls are served after. Without the watchdog (the attacker's run) no filler was ended
    and 6 of 6 calls failed."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    held: list[psycopg.Connection] = []
    others: list[psycopg.Connection] = []
    fillers: list[HeldFiller] = []
    again: list[float] = []
    again_pids: set[int] = set()
    with (
        caplog.at_level(logging.WARNING),
        running_vault(stack_env, TOKENVAULT_DATABASE_DSN=pg.vault_dsn) as vault,
        watchdog(pg, log_file),
    ):
        token, value = _issue(vault, stack_env)
        time.sleep(1.0)  # the vault's hog watch and the watchdog: each on its warm connection
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            dog = admin.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE usename = 'watchdog'").fetchall()
            slots, limits, unlimited = admin.execute(_SLOTS).fetchone() or (0, 0, 0)
        dog_pid, dog_start = dog[0] if dog else (0, None)
        try:
            # 1. every slot of the serving role's login
            refused = _connect_until_refused(pg.vault_dsn, held)
            attacker = held[0]
            # 2. the vault's own hog watch ended by its login, the slot it freed retaken before its next look
            watch_pids = [
                p
                for (p,) in attacker.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()"
                    " AND query LIKE '%%end_lock_hogs%%'"
                ).fetchall()
            ]
            attacker.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (watch_pids,))
            retaken, deadline = 0, time.monotonic() + 2.0
            while time.monotonic() < deadline and retaken < len(watch_pids):
                try:
                    held.append(psycopg.connect(pg.vault_dsn, autocommit=True))
                    retaken += 1
                except psycopg.OperationalError:
                    time.sleep(0.002)
            # 3. the watchdog's session: the serving role's ways of ending a session, each aimed at it
            tried: dict[str, str] = {}
            for name, statement, args in (
                ("pg_terminate_backend", "SELECT pg_terminate_backend(%s)", (dog_pid,)),
                ("vault.end_role_session", "SELECT vault.end_role_session(%s, %s, NULL)", (dog_pid, dog_start)),
                ("vault.end_lock_hogs", "SELECT count(*) FILTER (WHERE ended) FROM vault.end_lock_hogs('{}')", ()),
                ("watchdog.end_lock_hogs", "SELECT count(*) FROM watchdog.end_lock_hogs()", ()),
            ):
                try:
                    tried[name] = str(attacker.execute(statement, args).fetchone())
                except psycopg.errors.InsufficientPrivilege as e:
                    tried[name] = f"refused: {str(e).splitlines()[0][:60]}"
            dog_now = attacker.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = 'watchdog'"
            ).fetchall()  # fmt: skip
            # 4. its slots: the ETL and an analyst at their limits too; it still logs in up to its own
            etl_refused = _connect_until_refused(pg.etl_dsn, others)
            analyst_refused = _connect_until_refused(pg.analyst_dsn, others)
            dog_logins = 0  # its slots are all its own (attack 33, A4): a copy of its login finds none
            with contextlib.suppress(psycopg.OperationalError):
                others.append(psycopg.connect(pg.watchdog_dsn, autocommit=True))
                dog_logins += 1
            for conn in others:
                conn.close()
            # 5. the fill, from 6 of the held sessions
            fillers = [HeldFiller(conn, i * 10_000_000) for i, conn in enumerate(held[1 : 1 + FILLERS])]
            for filler in fillers:
                filler.start()
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and any(f.thread.is_alive() for f in fillers):
                time.sleep(0.1)
            # 5b. it keeps at it: each ended filler's slot retaken and filled again; the vault's calls meanwhile
            stop_refill = threading.Event()
            refills = [
                threading.Thread(
                    target=_refill, args=(pg.vault_dsn, (10 + i) * 10_000_000, stop_refill, again, again_pids)
                )
                for i in range(FILLERS)
            ]
            for thread in refills:
                thread.start()
            try:
                during = _calls(vault, stack_env, token, value, 8.0)
            finally:
                stop_refill.set()
                for thread in refills:
                    thread.join(20)
            # 6. the idle slots let go; the vault's calls
            for conn in held[1 + FILLERS :]:
                conn.close()
            time.sleep(1.0)
            after = _calls(vault, stack_env, token, value, 5.0)
        finally:
            for filler in fillers:
                filler.stop.set()
                filler.thread.join(20)
            for conn in [*held, *others]:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
    ended_after = sorted(f.ended_after for f in fillers if f.ended_after is not None)
    failed = [c for c in after if c[1] != "ok"]
    failed_during = [c for c in during if c[1] != "ok"]
    logged = _lines(log_file) if log_file.exists() else []
    dog_lines = [line for line in logged if _ENDED_LINE in str(line.get("message"))]
    vault_rule = [r for r in caplog.records if _VAULT_RULE_ENDED in r.getMessage()]
    first = {f.pid for f in fillers}
    dog_pids = {int(str(line["pid"])) for line in dog_lines}
    vault_pids = {int(getattr(r, "pid", 0)) for r in vault_rule}
    first_ended = sorted(int(str(line["locks"])) for line in dog_lines if int(str(line["pid"])) in first)
    print(
        f"A30-F4 vs watchdog: slots {slots}, every non-superuser login's limit together {limits} ({unlimited} without);"
        f" {len(held)} sessions of the serving role held ({refused}); the vault's hog watch {watch_pids} ended, slot"
        f" retaken {retaken}; aimed at the watchdog's session {dog_pid}: {tried}, still there: {dog_now};"
        f" ETL: {etl_refused}; analyst: {analyst_refused}; the watchdog logged in {dog_logins} more beside its own"
    )
    print(
        f"A30-F4 fill: {sum(f.refused for f in fillers)} batches refused (table full), fillers ended after"
        f" {[round(t, 2) for t in ended_after]} s, {len(first & dog_pids)} by the watchdog"
        f" holding {first_ended} entries;"
        f" refilling 8 s: {len(again)} fills ended after {min(again, default=0):.2f}-{max(again, default=0):.2f} s,"
        f" calls meanwhile {len(failed_during)} of {len(during)} failed {sorted({c[1] for c in failed_during})};"
        f" {len(dog_lines)} watchdog lines, {len(vault_rule)} of the vault's rule;"
        f" calls after: {len(failed)} of {len(after)} failed {sorted({c[1] for c in failed})}"
    )
    assert len(dog) == MEMBER_LOGIN_CONNECTION_LIMIT, dog  # its warm connection and its spares: every slot
    assert limits <= slots and unlimited == 0, (limits, slots, unlimited)  # every login's limit fits the slots
    assert watch_pids and retaken == len(watch_pids) and "too many connections" in refused  # the attack as in F4
    assert tried["pg_terminate_backend"].startswith("refused") and tried["watchdog.end_lock_hogs"].startswith("refused")
    assert tried["vault.end_role_session"] in ("(None,)", "(False,)") and tried["vault.end_lock_hogs"] == "(0,)"
    assert sorted(dog_now) == sorted((pid,) for pid, _ in dog)
    assert "too many connections" in etl_refused and "too many connections" in analyst_refused
    assert dog_logins == 0
    assert len(ended_after) == FILLERS and ended_after[-1] < 5.0, ended_after
    # the watchdog's look ends them all at once; a slot freed, the vault's own watch may log in again and end one
    assert first & dog_pids and first <= dog_pids | vault_pids and dog_pids <= first | again_pids
    assert again and max(again) < 5.0 and during and not failed_during, (again, during)
    assert after and not failed, after


@pytest.mark.timeout(120)
def test_a_login_made_by_member_login_takes_its_slots_out_of_the_serving_roles_share(
    private_postgres: Postgres,
) -> None:
    """compose's migrate (`--member-login watchdog:tokenvault_watchdog=...`) made the watchdog's login with
    CONNECTION LIMIT 3 after 0046 had given tokenvault_vault every slot the other limits left: together they
    overcommitted the server's slots by 3, and the serving role plus the others at their limits left the watchdog
    none. Now the serving role's limit is lowered by as much; a second run changes nothing."""
    pg = private_postgres
    login = f"dog_{secrets.token_hex(3)}"

    def state(admin: psycopg.Connection) -> tuple[int, int, int]:
        row = admin.execute(_SLOTS).fetchone()
        vault = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'tokenvault_vault'").fetchone()
        assert row is not None and vault is not None
        return int(row[0]), int(row[1]), int(vault[0])

    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        slots, limits, before = state(admin)
        assert limits <= slots  # the embedded stack's logins (the analyst's, the watchdog's) fit already
        create_member_logins(pg.admin_dsn, {login: "tokenvault_watchdog"})
        _, limits_made, vault_made = state(admin)
        create_member_logins(pg.admin_dsn, {login: "tokenvault_watchdog"})  # again: an existing login
        _, limits_again, vault_again = state(admin)
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))
    print(
        f"MEMBER LOGIN: slots {slots}; limits together {limits} (vault {before}) -> {limits_made} (vault {vault_made})"
        f" -> again {limits_again} (vault {vault_again})"
    )
    assert limits_made <= slots and vault_made == before - 3
    assert (limits_again, vault_again) == (limits_made, vault_made)
