"""The vault's Postgres on huge pages: reserved for it, used by it, given back when it stops.

Real PostgreSQL and the real kernel reservation (this runs as root, as the benchmarks do).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from devstack.hugepages import NR_HUGEPAGES, huge_page_bytes
from devstack.postgres import postmaster_pid
from devstack.stack import temporary_components

SHARED_BUFFERS = 4 * 2**30  # deploy/postgres/tokenvault.conf


def reserved_pages() -> int:
    return int(NR_HUGEPAGES.read_text())


def test_a_stack_with_huge_pages_maps_postgres_shared_memory_in_them_and_gives_them_back() -> None:
    before = reserved_pages()
    with temporary_components("tokenvault-hugepages-", huge_pages=True) as stack:
        added = int(stack.state.postgres["huge_pages_reserved"])
        # What Postgres computed for its shared memory (shared_buffers and the rest): over 4 GB of 2 MB pages.
        assert added * 2 * 2**20 > SHARED_BUFFERS
        assert reserved_pages() == before + added
        assert huge_page_bytes(postmaster_pid(Path(stack.state.postgres["data_dir"]))) >= SHARED_BUFFERS
        with psycopg.connect(stack.env["PG_VAULT_DSN"]) as conn:
            assert conn.execute("SELECT count(*) FROM vault.tokens").fetchone() == (0,)
    assert reserved_pages() == before


def test_a_stack_started_without_asking_leaves_the_host_reservation_alone() -> None:
    before = reserved_pages()
    with temporary_components("tokenvault-hugepages-") as stack:
        assert stack.state.postgres["huge_pages_reserved"] == "0"
        assert reserved_pages() == before
    assert reserved_pages() == before
