"""An audit append replaced in the vault's session to write its row otherwise is refused (review 15, finding 7).

The presence check compared client, action and purpose only. Code the database owner runs in a
vault session - a trigger on vault.audit_log, say, since PL/pgSQL can `EXECUTE 'PREPARE ...'` -
can replace the append after the vault prepared it. A replacement writing each row faithfully
but with `revealed` NULL passed: the reveal was served, its row chained by the trigger (audit-verify
intact), and who-saw, which lists a reveal by `revealed`, no longer showed it. So did one writing
another outcome, item count, token types or certificate. The check now compares every column
the append writes: such a call is refused and reveals nothing.

Each test on a database of its own: a row written with `revealed = '{}'` hashes otherwise in the
database than audit-verify reads it, and would break the session log for the other tests.
Real Postgres as the serving role; the end-to-end test runs the real vault and OpenBao too.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import RunningVault, running_vault
from tests.integration.audit_attacks import Sabotage, as_owner, count_revealed, own_database, planted, tokenize_fresh_ip
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.adapters.postgres import audit as audit_module
from vault_service.bootstrap import VAULT_SESSION_OPTIONS
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import AuditUnavailable

__all__ = ["own_database"]  # a fixture used here

_NAME = audit_module._APPEND_ONE.name
_COLUMNS = ("client", "client_serial", "client_cert_sha256", "action", "purpose", "token_types", "item_count",
            "outcome", "revealed")  # fmt: skip
_PARAMETERS = ("$1", "$2", "$3", "$4", "$5", "$6", "$7::int", "$8", "$9::bytea[]")


def append_one_writing(returning: str = ", ".join(audit_module.RETURNED_COLUMNS), **changed: str) -> str:
    """A PREPARE of the single-event append's name whose INSERT writes the row, some columns as `changed` (SQL).

    It returns what the vault's append returns, unless `returning` names other columns.
    """
    values = ", ".join(changed.get(c, p) for c, p in zip(_COLUMNS, _PARAMETERS, strict=True))
    return (
        f"PREPARE {_NAME} (text,text,text,text,text,text,int,text,bytea[]) AS /* rewritten */"
        f" INSERT INTO vault.audit_log ({', '.join(_COLUMNS)}) VALUES ({values}) RETURNING {returning}"
    )


def event(n: int) -> AuditEvent:
    return AuditEvent(
        "fraud-investigator", "detokenize", f"ok: 1 revealed, 0 refused ({n})", 1, "CASE-R15", "ip", "serial", "sha",
        (bytes(16),),
    )  # fmt: skip


def appended_after_replacing(env: dict[str, str], plant: str) -> bool:
    """Whether an append went through once `plant` replaced the append in the session the vault prepared it in."""
    pool = ConnectionPool(
        env["PG_VAULT_DSN"], min_size=1, max_size=1, open=False,
        kwargs={"autocommit": True, "options": VAULT_SESSION_OPTIONS},
    )  # fmt: skip
    pool.open(wait=True, timeout=15)
    try:
        log = PostgresAuditLog(pool)
        log.append(event(0))  # prepared by the vault now
        with pool.connection() as conn:  # the pool's one connection: the one the vault prepared on
            conn.execute(f"DEALLOCATE {_NAME}")
            conn.execute(plant)
        try:
            log.append(event(1))
        except AuditUnavailable:
            return False
        return True
    finally:
        pool.close()


def rows(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = 'CASE-R15'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize(
    "changed",
    [
        {"revealed": "NULL"},  # who-saw no longer lists the reveal; audit-verify intact
        {"revealed": "'{}'::bytea[]"},
        {"outcome": "'ok: 0 revealed, 1 refused'"},
        {"item_count": "0"},
        {"token_types": "'device_id'"},
        {"client_serial": "'0'"},
        {"client_cert_sha256": "''"},
    ],
    ids=["revealed-null", "revealed-empty", "outcome", "item_count", "token_types", "client_serial", "client_cert"],
)
def test_an_append_replaced_to_write_its_row_otherwise_is_refused(
    own_database: dict[str, str], changed: dict[str, str]
) -> None:
    assert not appended_after_replacing(own_database, append_one_writing(**changed)), "the rewritten append passed"
    assert rows(own_database) == 2  # the first append's row and the rewritten one: stored, the call refused


def test_an_append_replaced_to_return_other_columns_is_refused(own_database: dict[str, str]) -> None:
    """A planted statement returning less than the vault's append (its id only) is refused, not a crash."""
    assert not appended_after_replacing(own_database, append_one_writing(returning="id"))
    assert rows(own_database) == 2


def test_an_append_replaced_by_the_same_insert_passes(own_database: dict[str, str]) -> None:
    """The control: the check refuses what differs, not any statement it did not prepare itself."""
    assert appended_after_replacing(own_database, append_one_writing())
    assert rows(own_database) == 2


_REWRITE_IN_SESSION = Sabotage(
    plant="CREATE FUNCTION public.rewrite_append() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
    f" IF EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = '{_NAME}'"
    " AND statement NOT LIKE '%rewritten%') THEN"
    f" EXECUTE 'DEALLOCATE {_NAME}'; EXECUTE $p${append_one_writing(revealed='NULL')}$p$; END IF;"
    " RETURN NULL; END $f$;"
    " CREATE TRIGGER rewrite_append AFTER INSERT ON vault.audit_log"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.rewrite_append()",
    remove="DROP TRIGGER rewrite_append ON vault.audit_log; DROP FUNCTION public.rewrite_append()",
)
"""The database owner's trigger: on the first audit insert of a session, the append is replaced there."""


@pytest.fixture
def one_connection_vault(own_database: dict[str, str]) -> Iterator[RunningVault]:
    """A vault on its own database with one pooled connection: the replaced append serves every later call."""
    with running_vault(own_database, TOKENVAULT_DB_POOL_SIZE="1") as vault:
        yield vault


def test_a_reveal_whose_audit_row_is_rewritten_without_its_token_hash_is_refused(
    own_database: dict[str, str], one_connection_vault: RunningVault
) -> None:
    token = tokenize_fresh_ip(own_database, one_connection_vault)
    with planted(own_database, _REWRITE_IN_SESSION):
        revealed = count_revealed(own_database, one_connection_vault, token, [f"UNSEEN-R15-{n}" for n in range(3)])
    with as_owner(own_database) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE revealed IS NOT NULL), count(*) FILTER (WHERE revealed IS NULL)"
            " FROM vault.audit_log WHERE purpose LIKE 'UNSEEN-R15-%'"
        ).fetchone()
    assert row is not None
    naming_the_reveal, rewritten = row
    assert rewritten >= 1, "the rewritten append never ran: the test proves nothing"
    assert revealed == naming_the_reveal, f"{revealed} reveal(s) served, {naming_the_reveal} audit row(s) name them"
