"""A PostgreSQL cluster of the test's own, for tests that crash, restart or inspect its postmaster.

`cluster_of_its_own` starts one with devstack's start_postgres (initdb, migrations, role
passwords, as the stack's) under the test's tmp_path, and afterwards stops it and deletes its
files. A stop that fails (the test left the postmaster down, say) does not keep the files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from devstack.postgres import SERVER_LOG_BYTES, Postgres, pg_ctl, remove_cluster, start_postgres
from devstack.procs import StackError


@contextlib.contextmanager
def cluster_of_its_own(state_dir: Path, log_bytes: int = SERVER_LOG_BYTES) -> Iterator[Postgres]:
    """A cluster started under `state_dir` with the process's environment as it is; stopped and deleted after.

    `log_bytes`: its server log's rotation size (devstack.postgres.pg_ctl).
    """
    postgres = start_postgres(state_dir, log_bytes=log_bytes)
    try:
        yield postgres
    finally:
        with contextlib.suppress(StackError):
            pg_ctl(postgres.data_dir, postgres.bindir, postgres.run_as, "stop")
        remove_cluster(postgres.data_dir)
