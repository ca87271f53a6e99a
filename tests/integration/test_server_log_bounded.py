"""Any login's errors no longer fill the disk through the server log (review 35, R35-2).

Each failing statement was logged whole (log_min_error_statement = error) and an error's message quotes its input
(`'<100 KB>'::text::int`), to `$PGDATA/server.log` on the data directory's filesystem with no bound: the analyst's
login wrote 1.16 GB in 13 s, the ETL's writes got DiskFull, the checkpointer PANICked and the server stayed down.
Here a cluster of the test's own (its log rotated past 1 MiB, so at most 5 MiB in all) takes the analyst's failing
statements: 12 MB of input quoted by the errors' messages (logged whatever log_min_error_statement says) and 4 MB of
statements (logged whole under PostgreSQL's default). The log's files stay under the cap, the current one is still
`server.log` and holds the last error, and the serving role and the ETL are still served. Bounded: at most ~28 MB is
written even unbounded (the old code: 28.2 MB, 12.0 MB with the new log_min_error_statement).
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import SERVER_LOG, SERVER_LOG_ROTATED
from devstack.server_log import CHUNK
from tests.integration.own_cluster import cluster_of_its_own

LOG_BYTES = 1 << 20
CAP = (SERVER_LOG_ROTATED + 1) * LOG_BYTES
BIG_STATEMENTS = 4  # `SELECT 1/0 -- <1 MB>`: logged whole as the failing statement under log_min_error_statement=error
QUOTED_INPUTS = 60  # `SELECT '<200 KB>'::text::int`: the error's message quotes the 200 KB input
QUOTED_BYTES = 200_000


def _log_files(data_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in data_dir.glob(f"{SERVER_LOG}*")}


@pytest.mark.timeout(60)
def test_an_analysts_failing_statements_leave_the_server_log_under_its_cap_and_the_server_serving(
    tmp_path: Path,
) -> None:
    with cluster_of_its_own(tmp_path / "pg", log_bytes=LOG_BYTES) as pg:
        quoted = 0
        with psycopg.connect(pg.analyst_dsn, autocommit=True) as analyst:
            for _ in range(BIG_STATEMENTS):
                statement = "SELECT 1/0 -- " + "x" * (1 << 20)
                with pytest.raises(psycopg.errors.DivisionByZero):
                    analyst.execute(statement.encode())
            for _ in range(QUOTED_INPUTS):
                statement = "SELECT '" + "x" * QUOTED_BYTES + "'::text::int"
                with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                    analyst.execute(statement.encode())
                quoted += QUOTED_BYTES
            with pytest.raises(psycopg.errors.UndefinedFunction):  # its message names the function
                analyst.execute("SELECT tv_r35_last_error()")
        assert quoted > 2 * CAP  # the errors' messages alone were far more than the log may keep

        deadline = time.monotonic() + 5  # the writer copies the pipe as it comes
        current = pg.data_dir / SERVER_LOG
        while b"tv_r35_last_error" not in current.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        files = _log_files(pg.data_dir)
        assert sum(files.values()) <= CAP, files
        assert all(size <= LOG_BYTES for size in files.values()), files
        assert f"{SERVER_LOG}.{SERVER_LOG_ROTATED}" in files, files  # it did rotate, the oldest kept rotated files
        assert b"tv_r35_last_error" in current.read_bytes()  # the current log is at the same path
        assert CHUNK < LOG_BYTES

        with psycopg.connect(pg.vault_dsn, connect_timeout=5) as vault:
            assert vault.execute("SELECT 1").fetchone() == (1,)
        with psycopg.connect(pg.etl_dsn, connect_timeout=5) as etl:
            etl.execute(
                "INSERT INTO public.etl_quarantine (event_id, sqs_message_id, reason, detail, sent_at)"
                " VALUES ('r35-2-log', 'r35-2-log', 'processing_failed', 'd', now())"
            )
