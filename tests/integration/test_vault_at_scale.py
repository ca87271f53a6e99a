"""What keeps the vault's cost flat as it grows, checked on the real PostgreSQL of the stack.

The planner's choices are checked on a table of 300,000 rows without statistics, the state in
which a growing vault met its worst plans (a hash join over every row of a type for each batch
of lookups). The rows are inserted inside a transaction that is rolled back, so the session's
shared database is left as it was; the module's tests share that transaction, each under a savepoint.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.integration.own_database import database_of_its_own
from tests.integration.server_log_text import logged_once
from vault_service.adapters.postgres.session_settings import PINNED_SETTINGS
from vault_service.adapters.postgres.sql_arrays import bytea_array
from vault_service.adapters.postgres.token_rekeying import REINDEX_CONDITION, RESEAL_CONDITION, _select_batch_query
from vault_service.adapters.postgres.tokens import _FETCH_SEEING_SQL, _FIND, ERASURE_COUNT_SQL
from vault_service.bootstrap import open_vault_pool

ROWS = 300_000
SETTINGS = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "tokenvault.conf"


@pytest.fixture(scope="module")
def filled_transaction(stack_env: dict[str, str]) -> Iterator[psycopg.Connection]:
    """An admin connection inside a transaction where vault.tokens holds ROWS more rows and no statistics.

    Filled once for the module (a fill costs CI about 4 s): each test works under a savepoint of
    its own (`big_unanalyzed_tokens`). The session acts as the vault's serving role (SET ROLE).
    """
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], prepare_threshold=None) as conn:  # no prepares of psycopg's
        conn.execute("SET LOCAL session_replication_role = replica")  # no audit trigger for the filler rows
        key = conn.execute("SELECT min(id) FROM vault.data_keys").fetchone()
        key_id = key[0] if key and key[0] is not None else 1
        conn.execute(
            "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
            " SELECT 'ip_' || substr(md5('scale' || g), 1, 22), 'ip', sha256(('scale' || g)::bytea), %s, %s,"
            " sha256(g::text::bytea) FROM generate_series(1, %s) g",
            (key_id, key_id, ROWS),
        )
        conn.execute("DELETE FROM pg_statistic WHERE starelid = 'vault.tokens'::regclass")
        conn.execute("SET LOCAL ROLE tokenvault_vault")
        yield conn
        conn.rollback()


@pytest.fixture
def big_unanalyzed_tokens(filled_transaction: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The filled transaction, as the serving role, with what the test does undone after it (a savepoint).

    Rolled back to the savepoint, a test's changes are gone but their dead row versions stay in
    the table and its indexes until the transaction ends: the test changing 20,000 rows runs last.
    """
    conn = filled_transaction
    conn.execute("SAVEPOINT each_test")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK TO SAVEPOINT each_test")
        conn.execute("DEALLOCATE ALL")  # a PREPARE outlives the rollback; the next test may prepare the name again


def _plan(conn: psycopg.Connection, query: str, params: Any = None) -> dict[str, Any]:
    row = conn.execute(f"EXPLAIN (FORMAT JSON, VERBOSE) {query}", params).fetchone()
    assert row is not None
    plan: dict[str, Any] = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _scans_of_tokens(plan: dict[str, Any]) -> list[str]:
    return [n["Node Type"] for n in _nodes(plan) if n.get("Relation Name") == "tokens"]


def _indexes_of_tokens(plan: dict[str, Any]) -> set[str]:
    return {n["Index Name"] for n in _nodes(plan) if "Index Name" in n}


def test_lookups_by_fingerprint_stay_index_probes_on_a_large_table_without_statistics(
    big_unanalyzed_tokens: psycopg.Connection,
) -> None:
    fingerprints = [bytes([n % 256, n // 256]) * 16 for n in range(1000)]
    plan = _plan(big_unanalyzed_tokens, _FIND, {"type": "ip", "fps": bytea_array(fingerprints)})
    # Without statistics the planner does not know a fingerprint matches one row (an exclusion
    # constraint does not tell it, as a unique index did), so a probe may be a bitmap scan of
    # the hash index: still one bucket page per value, never a scan of the table.
    scans = _scans_of_tokens(plan)
    assert scans and set(scans) <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, scans
    assert "tokens_fingerprint_unique" in _indexes_of_tokens(plan)
    assert not [n for n in _nodes(plan) if n["Node Type"] in ("Hash Join", "Gather", "Gather Merge")]


def test_the_services_prepared_lookups_and_fetch_run_one_generic_plan_of_index_probes(
    big_unanalyzed_tokens: psycopg.Connection, stack_env: dict[str, str]
) -> None:
    # The service's connections plan prepared statements once (plan_cache_mode): a custom plan
    # would be made again on every call, which cost a one-token fetch half its CPU.
    pool = open_vault_pool(stack_env["PG_VAULT_DSN"], 1)
    try:
        with pool.connection() as service:
            assert service.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
    finally:
        pool.close()
    conn = big_unanalyzed_tokens
    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE fetch_tokens (text[]) AS {_FETCH_SEEING_SQL}")
    conn.execute("PREPARE find_tokens (text, bytea[]) AS " + _FIND.replace("%(type)s", "$1").replace("%(fps)s", "$2"))
    tokens = "{" + ",".join(f"ip_{n:022d}" for n in range(1000)) + "}"
    fetch = _plan(conn, sql.SQL("EXECUTE fetch_tokens({}::text[])").format(sql.Literal(tokens)).as_string(conn))
    fingerprints = [bytes([n % 256, n // 256]) * 16 for n in range(1000)]
    find = _plan(
        conn,
        sql.SQL("EXECUTE find_tokens('ip', {}::bytea[])")
        .format(sql.Literal(bytea_array(fingerprints)))
        .as_string(conn),
    )
    # Both are one probe per token or value of the hash indexes (migration 0011), not B-trees;
    # without statistics a probe of the lookup may be a bitmap scan (see the test above).
    assert set(_scans_of_tokens(fetch)) == {"Index Scan"}, _scans_of_tokens(fetch)
    # and the audit log's newest id the fetch saw (attack 43, A43-1): one probe of its primary key, not a scan.
    assert _indexes_of_tokens(fetch) == {"tokens_token_unique", "audit_log_pkey"}
    assert set(_scans_of_tokens(find)) <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, _scans_of_tokens(find)
    assert _indexes_of_tokens(find) == {"tokens_fingerprint_unique", "tokens_type_next_fingerprint"}
    for plan in (fetch, find):
        assert not [n for n in _nodes(plan) if n["Node Type"] in ("Hash Join", "Gather", "Gather Merge")]
    assert "unnest($1)" in json.dumps(fetch)  # planned for any array, not for this one


@pytest.fixture
def big_analyzed_tokens(stack_env: dict[str, str]) -> Iterator[psycopg.Connection]:
    """An admin connection to a database of its own, migrated, whose vault.tokens holds ROWS rows, analyzed.

    A database of its own: ANALYZE writes the table's size into pg_class in place, which no
    rollback undoes, and the session's database is left as it was.
    """
    with database_of_its_own(stack_env, "analyzed", migrated=True) as env:
        dsn = env["PG_ADMIN_DSN"]
        with psycopg.connect(dsn) as conn:
            conn.execute("SET LOCAL session_replication_role = replica")  # no audit trigger for the filler rows
            conn.execute(
                "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
                " SELECT 'ip_' || substr(md5('scale' || g), 1, 22), 'ip', sha256(('scale' || g)::bytea), 1, 1,"
                " sha256(g::text::bytea) FROM generate_series(1, %s) g",
                (ROWS,),
            )
            conn.commit()
            conn.execute("ANALYZE vault.tokens")  # what autovacuum does
            yield conn
            conn.rollback()


def test_after_analyze_no_secret_column_has_statistics_and_lookups_stay_hash_index_probes(
    big_analyzed_tokens: psycopg.Connection,
) -> None:
    # ANALYZE (autovacuum's) once copied about 100 sealed values and fingerprints into
    # pg_statistic, readable through pg_stats and left there by an erasure (insider round 6).
    # Since migration no_statistics_of_values those columns have a statistics target of 0; the
    # planner, which knows the other columns, still probes the hash indexes for each value, and
    # checks once whether any row has a next fingerprint through its partial index (thinking
    # most rows have one, it scanned the table for the first, which outside a key rotation
    # meant reading all of it: a scalar subquery keeps the ORDER BY that EXISTS drops).
    conn = big_analyzed_tokens
    analyzed = conn.execute(
        "SELECT a.attname FROM pg_statistic s JOIN pg_attribute a ON a.attrelid = s.starelid"
        " AND a.attnum = s.staattnum WHERE s.starelid = 'vault.tokens'::regclass"
    ).fetchall()
    assert {"token", "token_type", "dek_id"} <= {name for (name,) in analyzed}
    assert {"sealed", "fingerprint", "next_fingerprint"} & {name for (name,) in analyzed} == set()
    _as_the_service(conn)
    conn.execute(f"PREPARE fetch_tokens (text[]) AS {_FETCH_SEEING_SQL}")
    conn.execute("PREPARE find_tokens (text, bytea[]) AS " + _FIND.replace("%(type)s", "$1").replace("%(fps)s", "$2"))
    fingerprints = [bytes([n % 256, n // 256]) * 16 for n in range(1000)]
    find = _plan(
        conn,
        sql.SQL("EXECUTE find_tokens('ip', {}::bytea[])")
        .format(sql.Literal(bytea_array(fingerprints)))
        .as_string(conn),
    )
    tokens = "{" + ",".join(f"ip_{n:022d}" for n in range(1000)) + "}"
    fetch = _plan(conn, sql.SQL("EXECUTE fetch_tokens({}::text[])").format(sql.Literal(tokens)).as_string(conn))
    assert set(_scans_of_tokens(find)) <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, _scans_of_tokens(find)
    assert _indexes_of_tokens(find) == {"tokens_fingerprint_unique", "tokens_type_next_fingerprint"}
    assert set(_scans_of_tokens(fetch)) == {"Index Scan"}, _scans_of_tokens(fetch)
    # and the audit log's newest id the fetch saw (attack 43, A43-1): one probe of its primary key, not a scan.
    assert _indexes_of_tokens(fetch) == {"tokens_token_unique", "audit_log_pkey"}
    for plan in (find, fetch):
        assert not [n for n in _nodes(plan) if n["Node Type"] in ("Hash Join", "Gather", "Gather Merge")]
    # The key jobs' batches still read their work-list indexes.
    for condition, key_column, index in (
        (RESEAL_CONDITION, "dek_id", "tokens_dek"),
        (REINDEX_CONDITION, "fingerprint_key_id", "tokens_fingerprint_key"),
    ):
        query = (
            _select_batch_query(condition, key_column)
            .replace("ANY(%s)", "ANY($1)")
            .replace("LIMIT %s", "LIMIT $2")
            .replace("FROM %s)", "FROM $3)")
        )
        conn.execute(f"PREPARE work_batch_{key_column} (int[], bigint, int) AS {query}")  # $3: the pending key
        batch = _plan(conn, f"EXECUTE work_batch_{key_column}('{{1,2}}', 1000, 3)")
        assert set(_scans_of_tokens(batch)) <= {"Index Scan", "Index Only Scan"}, _scans_of_tokens(batch)
        assert _indexes_of_tokens(batch) == {index}


@pytest.mark.parametrize(
    ("condition", "key_column", "index"),
    [(RESEAL_CONDITION, "dek_id", "tokens_dek"), (REINDEX_CONDITION, "fingerprint_key_id", "tokens_fingerprint_key")],
)
def test_the_key_jobs_batches_read_their_work_list_index_under_a_generic_plan(
    big_unanalyzed_tokens: psycopg.Connection, condition: str, key_column: str, index: str
) -> None:
    # Unordered, the generic plan of "... = ANY($1) LIMIT $2" was a sequential scan stopping at
    # the first matches: 61 ms a batch on 300k rows when the old key's rows sit at the end.
    conn = big_unanalyzed_tokens
    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    query = (
        _select_batch_query(condition, key_column)
        .replace("ANY(%s)", "ANY($1)")
        .replace("LIMIT %s", "LIMIT $2")
        .replace("FROM %s)", "FROM $3)")
    )
    conn.execute(f"PREPARE work_batch (int[], bigint, int) AS {query}")  # $3: the reindex's pending key
    plan = _plan(conn, "EXECUTE work_batch('{1,2}', 1000, 3)")
    tokens_nodes = [n for n in _nodes(plan) if n.get("Relation Name") == "tokens"]
    assert {n["Node Type"] for n in tokens_nodes} <= {"Index Scan", "Index Only Scan"}, tokens_nodes
    assert {n.get("Index Name") for n in tokens_nodes} == {index}


def _reads_of_tokens(conn: psycopg.Connection) -> tuple[int, int]:
    """Sequential scans of vault.tokens and entries read from its indexes, so far in this transaction."""
    row = conn.execute(
        "SELECT (SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'vault.tokens'::regclass),"
        " (SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index"
        " WHERE indrelid = 'vault.tokens'::regclass)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _as_the_service(conn: psycopg.Connection) -> None:
    """The rest of the transaction runs as the service does: its role, its connections' settings, the audit triggers."""
    conn.execute("RESET ROLE")
    conn.execute("SET LOCAL session_replication_role = origin")
    conn.execute("SET LOCAL ROLE tokenvault_vault")
    for name, value in PINNED_SETTINGS.items():  # generic plans, no parallel workers, ...
        conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))


_ROTATED: dict[int, int] = {}
"""Old data key id -> the active one, as `_rotate_data_key_of` left them (inside the rolled-back transaction)."""


def _rotated(dek: int) -> int:
    return _ROTATED[dek]


def _rotate_data_key_of(conn: psycopg.Connection, tokens: list[str]) -> None:
    """As after a rotation: `tokens` under a decrypt_only encryption key, a newer one active (still the admin)."""
    conn.execute("RESET ROLE")
    conn.execute("UPDATE vault.data_keys SET state = 'decrypt_only' WHERE purpose = 'encryption' AND state = 'active'")
    ids = [
        conn.execute(
            "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state)"
            " VALUES ('encryption', 'unused', 'unused', %s) RETURNING id",
            (state,),
        ).fetchone()
        for state in ("decrypt_only", "active")
    ]
    assert ids[0] is not None and ids[1] is not None
    conn.execute("UPDATE vault.tokens SET dek_id = %s WHERE token = ANY(%s)", (ids[0][0], tokens))
    _ROTATED[ids[0][0]] = ids[1][0]


@pytest.mark.parametrize(
    ("function", "args"),
    [
        # A guard: the 0010 body (token = ANY(p_tokens)) was a bitmap probe of the token's hash
        # index under a generic plan on PostgreSQL 15, and scanned only under a custom plan of a
        # large batch, which the service's connections never make.
        pytest.param(
            "erase_tokens(%s::text[], %s::bytea[], 2, 'scale-test', '', '', 'scale test', 'ip')",
            lambda dek: ([b"\x01" * 16, b"\x02" * 16],),
            id="erase",
        ),
        # The 0010 body read the whole work-list index (tokens_dek) for each token. Since 0020 it
        # re-seals only from a decrypt_only key to the active one, as long as the value it replaces.
        pytest.param(
            "reseal_tokens(%s::text[], %s::int[], %s::int[], %s::bytea[], 'scale-test')",
            lambda dek: ([dek] * 2, [_rotated(dek)] * 2, [b"\x01" * 32] * 2),
            id="reseal",
        ),
        # The 0010 body hash-joined the batch against a scan of the table.
        pytest.param(
            "set_next_fingerprints(%s::text[], %s::bytea[], 'scale-test')",
            lambda dek: ([b"\x02" * 32, b"\x03" * 32],),
            id="set_next_fingerprints",
        ),
        pytest.param(  # the re-index clears next fingerprints it finds wrong (migration 0029)
            "clear_next_fingerprints(%s::text[], %s::bytea[], 'scale-test')",
            lambda dek: ([b"\x02" * 32, b"\x03" * 32],),
            id="clear_next_fingerprints",
        ),
    ],
)
def test_the_functions_that_change_values_find_their_rows_without_scanning_the_table(
    big_unanalyzed_tokens: psycopg.Connection, function: str, args: Callable[[int], tuple[Any, ...]]
) -> None:
    # Their generic plans once joined a batch's tokens against a scan of every row, or of a
    # whole index (migration 0011): the transaction's own statistics show what was read.
    conn = big_unanalyzed_tokens
    rows = conn.execute("SELECT 'ip_' || substr(md5('scale' || g), 1, 22) FROM generate_series(1, 2) g").fetchall()
    tokens = [token for (token,) in rows]  # two of the fixture's rows
    if function.startswith("reseal_tokens"):
        _rotate_data_key_of(conn, tokens)
    if function.startswith(("set_next_fingerprints", "clear_next_fingerprints")):  # refused unless a key is pending
        conn.execute("RESET ROLE")
        conn.execute(
            "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state)"
            " VALUES ('fingerprint', 'unused', 'unused', 'pending')"
        )
    _as_the_service(conn)
    dek = conn.execute("SELECT dek_id FROM vault.tokens WHERE token = %s LIMIT 1", (tokens[0],)).fetchone()
    assert dek is not None  # the old DEK as the re-encryption job read it

    before = _reads_of_tokens(conn)
    conn.execute(f"SELECT vault.{function}", (tokens, *args(dek[0]))).fetchall()
    after = _reads_of_tokens(conn)
    assert after[0] == before[0], "vault.tokens was scanned whole"
    assert 0 < after[1] - before[1] < ROWS // 100, "an index of vault.tokens was read whole"


def _leave_dead_work_list_entries(dsn: str, count: int) -> None:
    """Rows with a next fingerprint inserted and rolled back: dead entries in the work-list index until a vacuum."""
    with psycopg.connect(dsn) as other:
        other.execute("SET LOCAL session_replication_role = replica")
        other.execute(
            "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed,"
            " next_fingerprint) SELECT 'ip_' || substr(md5('dead' || g), 1, 22), 'ip', sha256(('dead' || g)::bytea),"
            " k, k, sha256(g::text::bytea), sha256(('dead next' || g)::bytea)"
            " FROM generate_series(1, %s) g, (SELECT coalesce(min(id), 1) AS k FROM vault.data_keys) keys",
            (count,),
        )
        other.rollback()


def _skip_dead_work_list_entries(conn: psycopg.Connection) -> None:
    """One plain scan of the work-list index marks its entries of dead rows, so later scans skip them.

    Any earlier compaction's scan does the same in production; without it the count below
    depended on what other tests had left unvacuumed (CI on 3 Dec: 8,018 entries read).
    """
    planner = ("enable_seqscan", "enable_bitmapscan", "enable_indexonlyscan")
    for setting in planner:
        conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))
    conn.execute("SELECT count(*) FROM vault.tokens WHERE next_fingerprint IS NOT NULL AND token_type = 'ip'")
    for setting in planner:
        conn.execute(sql.SQL("RESET {}").format(sql.Identifier(setting)))


def test_compaction_reads_its_batch_from_the_work_list_index_not_the_table(
    big_unanalyzed_tokens: psycopg.Connection, stack_env: dict[str, str]
) -> None:
    # After a fingerprint key's promotion: rows re-fingerprinted under it (their new versions
    # behind the table's other rows) wait to have next_fingerprint moved in, a batch at a time.
    conn = big_unanalyzed_tokens
    _leave_dead_work_list_entries(stack_env["PG_ADMIN_DSN"], 3000)  # as other tests' rotations do
    conn.execute("RESET ROLE")
    conn.execute("UPDATE vault.data_keys SET state = 'retired' WHERE purpose = 'fingerprint' AND state = 'active'")
    key = conn.execute(
        "INSERT INTO vault.data_keys (purpose, wrapped_key, kek_name, state)"
        " VALUES ('fingerprint', 'unused', 'unused', 'active') RETURNING id"
    ).fetchone()
    assert key is not None
    conn.execute(
        "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed,"
        " next_fingerprint, next_fingerprint_key_id) SELECT 'ip_' || substr(md5('compact' || g), 1, 22), 'ip',"
        " sha256(('compact' || g)::bytea), %s, %s, sha256(g::text::bytea), sha256(('next' || g)::bytea), %s"
        " FROM generate_series(1, 1500) g",
        (key[0] - 1, key[0] - 1, key[0]),  # under an older key, re-indexed under the new one
    )
    _skip_dead_work_list_entries(conn)
    _as_the_service(conn)

    before = _reads_of_tokens(conn)
    changed = conn.execute("SELECT vault.compact_fingerprints(%s, 1000, 'scale-test')", key).fetchone()
    after = _reads_of_tokens(conn)
    assert changed == (1000,)
    # The 0010 body (token IN (...)) hash-joined the batch against a second scan of the table,
    # and the 0011 one scanned it to find its work list (no index serves "fingerprint_key_id <>
    # key"); since 0013 the batch is read from the partial index of next fingerprints.
    assert after[0] == before[0], "vault.tokens was scanned whole to find the batch's rows"
    # Per changed row: its work-list entry, its id, and the two exclusion checks of its new
    # version (5 measured), not the rows before it.
    assert 0 < after[1] - before[1] <= 6 * 1000, "more index entries read than the batch's own"
    # The rest of the work list, then the call that finds it empty, still read no table.
    assert conn.execute("SELECT vault.compact_fingerprints(%s, 1000, 'scale-test')", key).fetchone() == (500,)
    assert conn.execute("SELECT vault.compact_fingerprints(%s, 1000, 'scale-test')", key).fetchone() == (0,)
    assert _reads_of_tokens(conn)[0] == before[0], "finding the work list empty scanned vault.tokens"


def test_the_erasure_check_reads_one_row_however_many_tokens_were_erased(
    big_unanalyzed_tokens: psycopg.Connection,
) -> None:
    # Every replica asks every interval. A full scan of vault.tokens (before 0010) cost about a
    # second of a core at 10M; max(erased_at) over the partial index missed erasures that
    # committed late; a count of the erased rows would read every one of them each time. The
    # count kept by the erasing transactions (0014) reads nothing of vault.tokens.
    conn = big_unanalyzed_tokens
    conn.execute("RESET ROLE")
    conn.execute(
        "UPDATE vault.tokens SET erased_at = now()"
        " WHERE id IN (SELECT id FROM vault.tokens ORDER BY id DESC LIMIT 20000)"
    )
    conn.execute("SET LOCAL ROLE tokenvault_vault")
    before = _reads_of_tokens(conn)
    assert conn.execute(ERASURE_COUNT_SQL).fetchone() is not None
    assert _reads_of_tokens(conn) == before, "the erasure check read vault.tokens"


def test_the_service_plans_without_parallel_workers_under_a_user_made_by_vault(stack_env: dict[str, str]) -> None:
    # Vault's database secrets engine makes users IN ROLE tokenvault_vault; role settings
    # (migration 0010) are not inherited, so the service sets it on its own connections.
    user, password = f"v-dynamic-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE tokenvault_vault").format(
                sql.Identifier(user), sql.Literal(password)
            )
        )
        try:
            dsn = make_conninfo(stack_env["PG_VAULT_DSN"], user=user, password=password)
            with psycopg.connect(dsn) as plain:
                assert plain.execute("SHOW max_parallel_workers_per_gather").fetchone() != ("0",)
            pool = open_vault_pool(dsn, 1)
            try:
                with pool.connection() as conn:
                    assert conn.execute("SHOW max_parallel_workers_per_gather").fetchone() == ("0",)
            finally:
                pool.close()
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as conn:  # the role's own logins (migration 0010)
        assert conn.execute("SHOW max_parallel_workers_per_gather").fetchone() == ("0",)


def test_the_embedded_database_runs_with_the_shipped_settings(stack_env: dict[str, str]) -> None:
    wanted = {
        line.split("=", 1)[0].strip() for line in SETTINGS.read_text().splitlines() if line.split("#", 1)[0].strip()
    }
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT name, sourcefile FROM pg_settings WHERE name = ANY(%s)", (sorted(wanted),)
        ).fetchall()
    assert {name for name, _ in rows} == wanted
    assert all(source and source.endswith("/tokenvault.conf") for _, source in rows), rows


def test_a_second_row_of_a_fingerprint_is_refused_and_its_key_value_stays_out_of_the_server_log(
    stack_env: dict[str, str],
) -> None:
    # The fingerprint's exclusion constraint (migration 0011) refuses a second row as a unique
    # index did. Its DETAIL names the key; the shipped settings log errors tersely. The vault's
    # own role provokes one; then the server log is read.
    marker = secrets.token_bytes(32)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as admin:
        row = admin.execute("SHOW data_directory").fetchone()
    assert row is not None
    log = Path(str(row[0])) / "server.log"
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as conn, pytest.raises(psycopg.errors.ExclusionViolation):
        conn.execute(
            "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
            " VALUES (%s, 'ip', %s, 1, 1, '\\x00'), (%s, 'ip', %s, 1, 1, '\\x00')",
            ("ip_" + secrets.token_hex(11), marker, "ip_" + secrets.token_hex(11), marker),
        )
    text = logged_once(log, 'violates exclusion constraint "tokens_fingerprint_unique"')
    assert 'violates exclusion constraint "tokens_fingerprint_unique"' in text  # the error was logged ...
    assert marker.hex() not in text.lower()  # ... without the key it collided on
