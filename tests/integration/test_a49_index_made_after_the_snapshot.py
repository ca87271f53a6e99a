"""Attack 49, A49-2: the index check sees an index made after the reads' snapshot, which the planner uses already.

`erase`'s count reads user_logins in one repeatable-read transaction, and a query of pg_index in it sees the
catalog of its snapshot - but the planner plans each read with the indexes committed when it plans. A lying index
the database owner builds between two reads of the count answers the later one, and a check in the snapshot does not
see it. `indexes_problems` also reads the catalog in a fresh session while the reads' transaction is open (an index
a read used cannot be dropped until it ends). And the migrations' own indexes are no finding. Real PostgreSQL (a
cluster of the test's own, migrated, with the stack's roles), the privacy officer's own login.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.integration.own_cluster import cluster_of_its_own
from tokenvault_cli.erase_reach import count_session, indexes_problems
from tokenvault_cli.row_indexes import index_problems

LYING_CLASS = """
CREATE FUNCTION public.a49_cmp(a text, b text) RETURNS int4 LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN current_setting('a49.lie', true) = 'on' THEN 1 ELSE pg_catalog.bttextcmp(a, b) END $$;
CREATE OPERATOR FAMILY public.a49_ops USING btree;
CREATE OPERATOR CLASS public.a49_text_ops FOR TYPE text USING btree FAMILY public.a49_ops AS
  OPERATOR 1 pg_catalog.<(text, text), OPERATOR 2 pg_catalog.<=(text, text), OPERATOR 3 pg_catalog.=(text, text),
  OPERATOR 4 pg_catalog.>=(text, text), OPERATOR 5 pg_catalog.>(text, text), FUNCTION 1 public.a49_cmp(text, text);
"""
LOOKUP = "EXPLAIN SELECT * FROM public.user_logins WHERE masked_device_id = 'dev_A49'"


def test_an_index_made_between_the_counts_reads_is_found_though_the_snapshot_does_not_show_it(tmp_path: Path) -> None:
    with cluster_of_its_own(tmp_path / "pg") as pg, psycopg.connect(pg.admin_dsn, autocommit=True) as owner:
        dsn = pg.privacy_officer_dsn
        with count_session(dsn) as conn:
            assert indexes_problems(conn, dsn) == []  # the migrations' indexes: no finding
        owner.execute(LYING_CLASS)
        owner.execute("DROP INDEX public.user_logins_masked_device_id")
        with count_session(dsn) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute("SELECT count(*) FROM public.user_logins")  # the snapshot, and the read's lock on the table
            owner.execute("CREATE INDEX a49_late ON public.user_logins (masked_device_id public.a49_text_ops)")
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(str(line) for (line,) in conn.execute(LOOKUP).fetchall())
            assert "a49_late" in plan, plan  # the planner uses it in this transaction already
            assert index_problems(conn) == []  # the snapshot's catalog does not show it
            found = indexes_problems(conn, dsn)
    assert found == [
        "index public.a49_late has operator class a49_text_ops, not built in"
        " (it, or an operator or function of its family)"
    ]
