"""The vault schema is locked down; migrations upgrade the exercise's table in place."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql
from psycopg_pool import ConnectionPool

from devstack.postgres import ANALYST_CONNECTION_LIMIT
from etl_service.adapters.postgres import PostgresLoginStore
from etl_service.domain.messages import UserLoginRow
from tests.integration.own_database import with_database
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_common.migrations import migrate

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM vault.tokens",
        "SELECT * FROM vault.data_keys",
        "SELECT * FROM vault.audit_log",
        "SELECT * FROM vault.erasure_count",
        "INSERT INTO vault.audit_log (at, client, action, item_count, outcome, prev_hash, row_hash)"
        " VALUES (now(), 'x', 'x', 0, 'x', '', '')",
    ],
)
def test_etl_role_is_refused_on_the_vault_schema(stack_env: dict[str, str], statement: str) -> None:
    with psycopg.connect(stack_env["PG_ETL_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_analyst_role_reads_user_logins_but_not_the_vault(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ANALYST_DSN"]) as conn:
        conn.execute("SELECT count(*) FROM user_logins")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM vault.tokens")


def test_analysts_cannot_take_the_connection_slots_the_services_need(stack_env: dict[str, str]) -> None:
    # With max_connections at 100, a person's script opening connections in a loop would
    # otherwise leave the vault's pool none to grow into.
    opened: list[psycopg.Connection] = []
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            for _ in range(ANALYST_CONNECTION_LIMIT + 1):
                opened.append(psycopg.connect(stack_env["PG_ANALYST_DSN"]))
        assert len(opened) <= ANALYST_CONNECTION_LIMIT
        with psycopg.connect(stack_env["PG_VAULT_DSN"]) as vault:  # the service still gets in
            vault.execute("SELECT 1")
    finally:
        for conn in opened:
            conn.close()


ETL_CONNECTION_LIMIT = 40  # migrations/0007_insider_findings.sql: ALTER ROLE tokenvault_etl CONNECTION LIMIT


def test_the_etl_cannot_take_the_connection_slots_the_vault_pool_grows_into(
    stack_env: dict[str, str], stub_for: Callable[..., vault_pb2_grpc.TokenVaultStub]
) -> None:
    # docs/threat-model.md: "the ETL's role has a connection limit ... so neither can take the
    # connection slots the vault's pool grows into". A compromised ETL opening connections in a
    # loop is refused at the limit; the vault's pool keeps serving and can still grow.
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as admin:
        held = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'").fetchone()
    already = held[0] if held else 0
    opened: list[psycopg.Connection] = []
    try:
        with pytest.raises(psycopg.OperationalError, match='too many connections for role "tokenvault_etl"'):
            for _ in range(ETL_CONNECTION_LIMIT + 1):
                opened.append(psycopg.connect(stack_env["PG_ETL_DSN"]))
        assert already + len(opened) == ETL_CONNECTION_LIMIT  # every slot up to the limit, not one more
        column = vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=["192.0.2.41"])
        tokenized = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=10)
        token = tokenized.columns[0].tokens[0]
        revealed = stub_for("analyst").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-SLOTS"), timeout=10
        )
        assert revealed.results[0].value.value == "192.0.2.41"  # the vault's pool still reads and writes
        with psycopg.connect(stack_env["PG_VAULT_DSN"]) as vault:  # and a new slot for it is still there
            vault.execute("SELECT 1")
    finally:
        for conn in opened:
            conn.close()


def test_the_serving_role_cannot_take_the_connection_slots_the_etl_and_analysts_need(
    stack_env: dict[str, str],
) -> None:
    # Attack 29, F3: the role had no limit; a script with its password took every non-superuser slot in half a
    # second and the ETL's and the analysts' logins were refused. Migration 0046 gives it what the slots leave
    # once the other logins' limits are counted; the vault's own pool, already open, keeps serving.
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as admin:
        row = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'tokenvault_vault'").fetchone()
        slots = admin.execute(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
        ).fetchone()
    assert row is not None and slots is not None
    assert 16 <= row[0] <= slots[0] - ETL_CONNECTION_LIMIT - ANALYST_CONNECTION_LIMIT, (row, slots)
    opened: list[psycopg.Connection] = []
    try:
        with pytest.raises(psycopg.OperationalError, match='too many connections for role "tokenvault_vault"'):
            for _ in range(slots[0] + 1):  # before: "too many clients" / slots reserved, every slot taken
                opened.append(psycopg.connect(stack_env["PG_VAULT_DSN"]))
        for dsn in ("PG_ETL_DSN", "PG_ANALYST_DSN"):
            with psycopg.connect(stack_env[dsn]) as other:  # still get in
                assert other.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in opened:
            conn.close()


def test_neither_analysts_nor_the_etl_create_temporary_tables(stack_env: dict[str, str]) -> None:
    # Attack 29, F2: an analyst's session creating temporary tables in one transaction filled the server's lock
    # table in seconds (no new token issued while it held). Migration 0046 revokes TEMPORARY from analysts.
    # Review 34, R34-1: the ETL's login staged a tree of thousands of temporary tables over small transactions,
    # then filled the table with one LOCK TABLE faster than the lock watchdog looks; 0051 revokes its TEMPORARY
    # (its redelivered batches merge through INSERT ... SELECT FROM unnest, no staging table).
    for dsn in ("PG_ANALYST_DSN", "PG_ETL_DSN"):
        with psycopg.connect(stack_env[dsn]) as conn, pytest.raises(errors.InsufficientPrivilege, match="temporary"):
            conn.execute("CREATE TEMP TABLE scratch (x int)")
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as admin:
        may = admin.execute(
            "SELECT r.rolname FROM pg_catalog.pg_roles r"
            " WHERE r.rolname IN ('tokenvault_vault', 'tokenvault_etl', 'tokenvault_analyst', 'tokenvault_watchdog')"
            " AND has_database_privilege(r.oid, current_database(), 'TEMPORARY')"
        ).fetchall()
        public = admin.execute("SELECT has_database_privilege('public', current_database(), 'TEMPORARY')").fetchone()
    assert may == [] and public == (False,), (may, public)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM vault.audit_log",
        "UPDATE vault.audit_log SET outcome = 'ok'",
        "DELETE FROM vault.tokens",
        "UPDATE vault.data_keys SET purpose = 'encryption'",
        # the erasure mark other replicas watch: held still, they would keep erased tokens cached
        "UPDATE vault.erasure_count SET erasures = 0",
        "DELETE FROM vault.erasure_count",
        "SELECT * FROM vault.erasure_count FOR UPDATE",
        "SELECT * FROM user_logins",
        "CREATE TABLE vault.sneaky (x int)",
        # a chosen id (ahead of the sequence, later inserts would meet it) or erasure time
        "INSERT INTO vault.tokens (id, token, token_type, fingerprint, fingerprint_key_id, dek_id)"
        " OVERRIDING SYSTEM VALUE VALUES (9000000000, 'ip_x', 'ip', '\\x01', 1, 1)",
        "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, erased_at)"
        " VALUES ('ip_y', 'ip', '\\x02', 1, 1, '9999-12-31')",
    ],
)
def test_vault_role_cannot_delete_rewrite_tokens_or_audit_or_reach_other_data(
    stack_env: dict[str, str], statement: str
) -> None:
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize(
    "assignment",
    [
        "erased_at = now()",  # erased without an audit row (and without the erasure mark moving)
        "erased_at = NULL",  # un-erased
        "dek_id = dek_id",  # re-pointed at another data key
        "sealed = sealed",  # a value swapped for another's
        "fingerprint = fingerprint",  # a lookup re-pointed: the same value gets another token
        "fingerprint_key_id = fingerprint_key_id",
        "next_fingerprint = fingerprint",
    ],
)
def test_vault_role_cannot_update_the_token_columns_it_once_could(stack_env: dict[str, str], assignment: str) -> None:
    # Migration 0004 granted the serving role UPDATE on these columns; 0006 revoked it, so that
    # only vault.erase_tokens / reseal_tokens / set_next_fingerprints (each writing its own
    # audit row) change them. The refusal must be the column privilege on vault.tokens itself,
    # not an incidental one (setting erased_at also fires a trigger the role cannot run).
    with (
        psycopg.connect(stack_env["PG_VAULT_DSN"]) as conn,
        pytest.raises(errors.InsufficientPrivilege, match="permission denied for table tokens"),
    ):
        conn.execute(f"UPDATE vault.tokens SET {assignment}")


def test_public_has_no_privilege_on_the_vault_schema(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT has_schema_privilege('public', 'vault', 'USAGE'),"
            " has_table_privilege('public', 'vault.tokens', 'SELECT')"
        ).fetchone()
    assert row == (False, False)


def _exercise_database(admin: str, name: str) -> str:
    """A database `name` made afresh holding the exercise's table (examples/create_table.sql), not migrated: its DSN."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_database(admin, name)
    with psycopg.connect(dsn) as conn:
        conn.execute((REPO / "examples" / "create_table.sql").read_text().encode())
    return dsn


def test_migrations_upgrade_the_exercise_table_in_place(stack_env: dict[str, str]) -> None:
    dsn = _exercise_database(stack_env["PG_ADMIN_DSN"], "exercise_upgrade")
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO user_logins VALUES ('u1', 'ios', 'old-mask', 'old-mask', 'US', 230, '2020-01-02')")
        # A row 0026's CHECK refuses, loaded before it: kept (NOT VALID), as every row of the table.
        conn.execute("INSERT INTO user_logins VALUES (E'u2\\x1b[2J', 'ios', 'm', 'm', 'US', 230, '2020-01-03')")
    assert migrate(dsn)  # applies everything
    assert migrate(dsn) == []  # and only once
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT user_id, masked_ip, app_version, create_date::text FROM user_logins WHERE user_id = 'u1'"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM user_logins WHERE user_id LIKE 'u2%'").fetchone() == (1,)
        columns = {
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT column_name FROM information_schema.columns WHERE table_name = 'user_logins'")
            )
        }
    assert rows == [("u1", "old-mask", 230, "2020-01-02")]
    assert {"event_id", "app_version_text", "sent_at"} <= columns


def test_the_etl_merges_redeliveries_in_a_migrated_exercise_database_with_no_temporary_table(
    stack_env: dict[str, str],
) -> None:
    """As compose's exercise stack: the exercise's DDL in a database made later (PUBLIC's TEMPORARY again, as in the
    exercise image's `postgres`), migrated; the ETL's login may create no temporary table there (0051, review 34
    R34-1), and its loader still loads, merges a redelivery and the same event twice (no staging table)."""
    dsn = _exercise_database(stack_env["PG_ADMIN_DSN"], "exercise_etl")
    assert migrate(dsn)
    with psycopg.connect(dsn) as conn:
        may = conn.execute(
            "SELECT has_database_privilege('tokenvault_etl', current_database(), 'TEMPORARY'),"
            " has_database_privilege('public', current_database(), 'TEMPORARY')"
        ).fetchone()
    assert may == (False, False)
    etl_dsn = with_database(stack_env["PG_ETL_DSN"], "exercise_etl")
    with psycopg.connect(etl_dsn) as etl, pytest.raises(errors.InsufficientPrivilege, match="temporary"):
        etl.execute("CREATE TEMP TABLE staging_user_logins (x int)")
    sent = datetime(2024, 1, 1, tzinfo=UTC)

    def rows(tag: str, n: int) -> list[UserLoginRow]:
        return [
            UserLoginRow(
                f"u{i}",
                "ios",
                f"tok_ip_{i}",
                f"tok_dev_{i}",
                "en_US",
                230,
                date(2020, 1, 2),
                "2.3.0",
                f"{tag}-e{i}",
                f"{tag}-m{i}",
                sent,
            )
            for i in range(n)
        ]

    with ConnectionPool(etl_dsn, min_size=1, max_size=1, open=True) as pool:
        store = PostgresLoginStore(pool)
        assert store.write(rows("a", 100), []).rows_inserted == 100  # the direct COPY
        again = store.write([*rows("a", 100), *rows("b", 50)], [])  # a redelivery with new events: the merge
        assert (again.rows_inserted, again.reused) == (50, ())
        twice = rows("c", 3)
        assert store.write([*twice, twice[0]], []).rows_inserted == 3  # the same event twice in one batch
    with psycopg.connect(dsn) as conn:
        loaded = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), min(app_version_text), min(sent_at) FROM user_logins"
            " WHERE event_id IS NOT NULL"
        ).fetchone()
    assert loaded == (153, 153, "2.3.0", sent)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user_id", "u\x1b]0;owned\x07"),  # an escape sequence retitling the analyst's terminal
        ("user_id", "evil\u202egnp.exe"),  # a right-to-left override
        ("device_type", "ios\x9b2J"),  # a C1 control (CSI)
        ("masked_ip", "tok_\u200b1"),  # a zero-width space inside a token
        ("locale", "en\ufeff"),
        ("app_version_text", "1.0\n"),
        ("event_id", "evt-\u2067-1"),
        ("user_id", "admin\U000e0041\U000e0042"),  # tag characters: invisible text ("ASCII smuggling")
        ("device_type", "ios\u180e"),
    ],
)
def test_user_logins_refuses_control_and_spoofing_characters_from_the_etl_role(
    stack_env: dict[str, str], column: str, value: str
) -> None:
    # Migration 0026: the ETL's validation sends such events to the dead-letter queue; an insider
    # with the ETL's database identity writing directly is refused by the table itself.
    row = {
        "user_id": "u",
        "device_type": "ios",
        "masked_ip": "t1",
        "masked_device_id": "t2",
        "locale": "RU",
        "app_version_text": "1.0",
        "event_id": None,
        column: value,
    }
    names = sql.SQL(", ").join(map(sql.Identifier, row))
    insert = sql.SQL("INSERT INTO user_logins ({}) VALUES ({})").format(
        names, sql.SQL(", ").join(sql.Placeholder() * len(row))
    )
    with psycopg.connect(stack_env["PG_ETL_DSN"]) as conn:
        with pytest.raises(errors.CheckViolation, match="user_logins_printable"):
            conn.execute(insert, list(row.values()))
        conn.rollback()
        printable = {**row, column: "Zo\u00eb \u65e5\u672c-1" if column != "locale" else "pt-BR"}
        conn.execute(insert, list(printable.values()))  # non-ASCII printable text is kept
        conn.rollback()  # the ETL role may not delete: nothing is left behind
