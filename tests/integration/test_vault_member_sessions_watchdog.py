"""The sessions of every login IN ROLE tokenvault_vault together are held to the group's budget (migration 0059).

Attack 32, F7: in Kubernetes the vault logs in as Vault-made logins IN ROLE tokenvault_vault, each with the CONNECTION
LIMIT of Vault's creation statement (docs/production.md: the pool size plus 6), and PostgreSQL 15 limits per login
only: whoever may read `database/creds/tokenvault-vault` minted 7 logins, held 96 sessions, and the ETL's, an
analyst's and the watchdog's new logins were refused. Here the logins are made as Vault's database engine makes them
(its creation statement, run by the admin login it is given) on a cluster of the test's own, and the watchdog - the
real process, as the stack starts it - ends the sessions past tokenvault_vault's own limit (0046's), the newest
login's first; the vault's own sessions within the budget and an append holding the audit chain's lock stay.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import Postgres
from devstack.procs import free_port
from tests.integration.test_lock_watchdog import _lines, _metric, private_postgres, watchdog

__all__ = ["private_postgres"]  # the fixture, used by name

POOL_PLUS_SIX = 16
"""The per-login limit docs/production.md gave Vault's creation statement (pool 10, plus 6)."""
MINTED = 7
"""Logins minted, as the tester's (7 x 16 > the server's slots)."""
_ENDED = "a login IN ROLE tokenvault_vault"


_WATCHDOG_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'watchdog'"


def _try(dsn: str) -> str:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return "ok"
    except psycopg.Error as error:
        return " ".join(str(error).split())[-80:]


def _close(conns: list[psycopg.Connection]) -> None:
    for conn in conns:
        conn.close()


def _one(admin: psycopg.Connection, query: str) -> int:
    row = admin.execute(query).fetchone()
    assert row is not None
    return int(str(row[0]))


def _alive(admin: psycopg.Connection, pids: list[int]) -> set[int]:
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchall()
    return {int(row[0]) for row in rows}


@pytest.mark.timeout(90)
def test_member_logins_past_the_groups_budget_are_ended_newest_first_and_the_others_connect_again(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """7 member logins minted at 16 sessions each fill the server's slots; the watchdog ends the members' sessions
    past tokenvault_vault's limit within a look or two - the newest logins' first, never the vault's own 4 nor a
    minted session holding the audit chain's lock - one ERROR line each (pid, login; no statement), counted; the
    ETL's, an analyst's and the watchdog's logins connect again. Before 0059 nothing ended them: all 3 refused."""
    pg = private_postgres
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    host_part = pg.vault_dsn.split("@", 1)[1]
    held: list[psycopg.Connection] = []
    with contextlib.ExitStack() as closing, psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        closing.callback(_close, held)
        budget = _one(admin, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'tokenvault_vault'")
        vault = [psycopg.connect(pg.vault_dsn, autocommit=True) for _ in range(4)]  # its pool, within the budget
        held += vault
        vault_pids = [conn.info.backend_pid for conn in vault]
        with watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}):
            time.sleep(0.5)  # it is looking (its "started" line came before): its warm connection held
            minted: dict[int, str] = {}
            refused = 0
            started = time.monotonic()
            logins = [f"v-token-tokenvault-vault-{n}-{secrets.token_hex(4)}" for n in range(MINTED)]
            passwords = [secrets.token_urlsafe(18) for _ in logins]
            for login, password in zip(logins, passwords, strict=True):  # the oids in this order: the last newest
                admin.execute(  # Vault's creation statement for the role (docs/production.md step 3)
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {} IN ROLE tokenvault_vault").format(
                        sql.Identifier(login), sql.Literal(password), sql.Literal(POOL_PLUS_SIX)
                    )
                )
            # The newest login's session appending - the chain's lock held in a transaction - taken while the group is
            # still within its budget: the watchdog, looking meanwhile, has nothing to end before it holds the lock.
            appender = psycopg.connect(f"postgresql://{logins[-1]}:{passwords[-1]}@{host_part}", autocommit=True)
            held.append(appender)
            appending = appender.info.backend_pid
            minted[appending] = logins[-1]
            appender.execute("BEGIN")
            appender.execute("SELECT vault.lock_audit_chain()")
            for login, password in zip(logins, passwords, strict=True):
                for _ in range(POOL_PLUS_SIX - (login == logins[-1])):
                    try:
                        conn = psycopg.connect(f"postgresql://{login}:{password}@{host_part}", autocommit=True)
                    except psycopg.OperationalError:
                        refused += 1
                        continue
                    held.append(conn)
                    minted[conn.info.backend_pid] = login
            filled = time.monotonic() - started
            time.sleep(0.75)  # a look or two after the last session
            members = _one(
                admin,
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid"
                " WHERE pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER') AND NOT r.rolsuper",
            )
            after = {"etl": _try(pg.etl_dsn), "analyst": _try(pg.analyst_dsn)}
            # the watchdog's own login: every slot held by the watchdog itself (attack 33, A4), looking on
            after["watchdog"] = "ok" if _one(admin, _WATCHDOG_SESSIONS) == 3 else "its slots not held"
            alive = _alive(admin, [*vault_pids, *minted])
            counted = _metric(port, 'tokenvault_lock_watchdog_vault_budget_sessions_total{ended="true"}')
            gauge_budget = _metric(port, "tokenvault_lock_watchdog_vault_session_budget")
        still_appending = appending in alive
    ended = {pid: login for pid, login in minted.items() if pid not in alive}
    by_login = {login: sum(1 for who in ended.values() if who == login) for login in logins}
    opened = {login: sum(1 for who in minted.values() if who == login) for login in logins}
    print(
        f"VAULT-MEMBERS: budget {budget}; {MINTED} logins minted, {len(minted)} sessions opened in {filled:.2f} s"
        f" ({refused} refused while full); ended {len(ended)} (per login, oldest first: {list(by_login.values())});"
        f" members' sessions after {members}; the vault's 4 kept: {all(pid in alive for pid in vault_pids)};"
        f" after: {after}; counted {counted}"
    )
    assert after == {"etl": "ok", "analyst": "ok", "watchdog": "ok"}, after
    assert members <= budget
    assert all(pid in alive for pid in vault_pids), "the vault's own sessions within the budget ended"
    assert still_appending, "a session holding the audit chain's lock was ended"
    # The newest logins' first: none of a login older than the first one hit; all of every later one (but the append).
    first_hit = min(i for i, login in enumerate(logins) if by_login[login])
    assert all(by_login[login] == 0 for login in logins[:first_hit]), by_login
    later = logins[first_hit + 1 :]
    assert all(by_login[login] == opened[login] - (login == logins[-1]) for login in later), (by_login, opened)
    assert counted == len(ended) and gauge_budget == budget
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert sorted((line["pid"], line["login"]) for line in lines) == sorted(ended.items()), lines
    assert all(set(line) >= {"pid", "login", "idle"} for line in lines)
    assert "lock_audit_chain" not in log_file.read_text()  # no statement
