"""`tokenvault erase` without `--user-id`: tokens of different people reach others too (review 37, R37-8).

Without the person named the count cannot tell whose request it is; it refused a token in several people's rows,
but two tokens each held by a different person alone - an officer's tokens copied from two people's rows - were
erased without a word, though the count saw two people. Now, unnamed, every token held reaches the others once the
rows holding them are several people's; one person's tokens alone are erased as before. Real PostgreSQL (a cluster
of the test's own, migrated, the stack's analyst login), the count as `erase` makes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.own_cluster import cluster_of_its_own
from tokenvault_cli.erase_reach import count_reach

IP_X, DEVICE_X, IP_Y = "ip_R37unnamedXipToken000", "device_id_R37unnamedXdevTok0", "ip_R37unnamedYipToken000"


@pytest.mark.timeout(60)
def test_tokens_each_of_a_different_person_reach_others_without_a_user_id(tmp_path: Path) -> None:
    started = time.monotonic()
    with cluster_of_its_own(tmp_path / "pg") as pg:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            admin.execute(
                "INSERT INTO public.user_logins (user_id, masked_ip, masked_device_id, event_id)"
                " VALUES ('r37-x', %s, %s, 'r37-8-1'), ('r37-x', %s, %s, 'r37-8-2'), ('r37-y', %s, NULL, 'r37-8-3')",
                (IP_X, DEVICE_X, IP_X, DEVICE_X, IP_Y),
            )
        one = count_reach(pg.analyst_dsn, [IP_X, DEVICE_X], [])  # one person's tokens: erased as before
        two = count_reach(pg.analyst_dsn, [IP_X, IP_Y], [])  # each token one person's alone, two people
        named = count_reach(pg.analyst_dsn, [IP_X, IP_Y], ["r37-x"])
    print(
        f"\nR37-8 unnamed: one person's tokens reach {[t.token for t in one.reaching()]}; two people's"
        f" {[t.token for t in two.reaching()]} ({two.other_people} people, {two.other_rows} rows);"
        f" {time.monotonic() - started:.1f} s"
    )
    assert one.reaching() == [] and (one.other_people, one.other_rows) == (0, 0)
    assert [t.token for t in two.reaching([IP_X, IP_Y])] == [IP_X, IP_Y]
    assert (two.other_people, two.other_rows) == (2, 3)
    assert [t.token for t in named.reaching()] == [IP_Y] and (named.other_people, named.other_rows) == (1, 1)
