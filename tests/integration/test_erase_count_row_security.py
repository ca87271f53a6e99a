"""The officer's count refuses, erasing nothing, when a row-level security policy would choose what it sees.

Attack 46's note: the database owner's policy on user_logins - say, rows of other people hidden from the
officer's login - made `tokenvault erase`'s count find no one else holding a shared value, so the erasure took
it from their rows too, unwarned. The count's session now pins `row_security = off` (erase_reach.COUNT_SETTINGS):
any policy on a table it reads makes the query fail, and the message says why. Real PostgreSQL (a cluster of
the test's own, migrated, with the stack's roles), the privacy officer's own login.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.own_cluster import cluster_of_its_own
from tokenvault_cli.erase_reach import POLICY_HIDES_ROWS, count_reach
from tokenvault_cli.query import QueryError

TOKEN = "ip_RowSecurityShared00000"


def test_a_policy_hiding_other_peoples_rows_makes_the_count_refuse_not_miss_them(tmp_path: Path) -> None:
    with cluster_of_its_own(tmp_path / "pg") as pg, psycopg.connect(pg.admin_dsn, autocommit=True) as owner:
        owner.execute(
            "INSERT INTO public.user_logins (user_id, masked_ip, event_id) VALUES (%s, %s, 'rs-1'), (%s, %s, 'rs-2')",
            ("rs-person", TOKEN, "rs-neighbour", TOKEN),
        )
        seen = count_reach(pg.privacy_officer_dsn, [TOKEN], ["rs-person"])
        assert (seen.other_people, seen.other_rows) == (1, 1)  # the neighbour's row, counted
        owner.execute("ALTER TABLE public.user_logins ENABLE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY only_the_person ON public.user_logins USING (user_id = 'rs-person')")
        with pytest.raises(QueryError) as refused:
            count_reach(pg.privacy_officer_dsn, [TOKEN], ["rs-person"])  # before: other_people 0, erasure let through
    assert "row-level security" in str(refused.value) and POLICY_HIDES_ROWS in str(refused.value)
