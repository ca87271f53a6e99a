"""The stack's PostgreSQL keeps none of the operator's environment, where its superuser would read it.

Fourth insider round, MED-5: the operator follows the docs (`set -a; . .stack/stack.env`,
`export BAO_TOKEN=...`) and `make up` restarts Postgres; the postmaster inherited that shell's
whole environment, and the database superuser read the live Vault token, every DSN with its
password and the cloud keys through `pg_read_binary_file('/proc/<pid>/environ')`. Here a
cluster is started, and restarted as `make up` does after a crash, by the stack's own code with
a marker in the environment, and the superuser reads the postmaster's environment.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import Postgres, pg_ctl, postmaster_pid
from tests.integration.own_cluster import cluster_of_its_own

_SET_BY_THE_STACK_OR_POSTGRES = {
    *("PATH", "LANG", "HOME", "USER"),  # devstack.procs.minimal_environment
    *("SHELL", "LOGNAME", "PWD"),  # runuser, and the shell pg_ctl starts the postmaster with
    *("PGDATA", "PGLOCALEDIR", "PGSYSCONFDIR", "PG_GRANDPARENT_PID"),  # pg_ctl and postgres themselves
}


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret-looking value in the operator's environment, as `export BAO_TOKEN=...` leaves it."""
    value = f"marker-{uuid.uuid4().hex}"
    for name in ("BAO_TOKEN", "VAULT_TOKEN", "PG_VAULT_DSN", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
        monkeypatch.setenv(name, value)
    return value


@pytest.fixture
def cluster(tmp_path: Path, marker: str) -> Iterator[Postgres]:
    """A cluster started by devstack's start_postgres with `marker` in the environment; stopped and deleted after."""
    with cluster_of_its_own(tmp_path) as postgres:
        yield postgres


def _postmaster_environment_as_superuser(postgres: Postgres) -> str:
    with psycopg.connect(postgres.admin_dsn) as admin:
        (raw,) = admin.execute(
            "SELECT pg_read_binary_file(%s, 0, 200000)", (f"/proc/{postmaster_pid(postgres.data_dir)}/environ",)
        ).fetchone() or (b"",)
    return bytes(raw).decode(errors="replace")


def _names(environ: str) -> set[str]:
    return {entry.split("=", 1)[0] for entry in environ.split("\0") if "=" in entry}


def test_the_superuser_finds_nothing_of_the_operator_s_environment_in_the_postmaster_s(
    cluster: Postgres, marker: str
) -> None:
    started = _postmaster_environment_as_superuser(cluster)
    assert "PATH" in _names(started)  # the read itself works: an empty answer would prove nothing
    inherited = marker in started  # a bool: a failure names variables, never shows their values
    assert not inherited, f"the postmaster inherited {sorted(_names(started))}"
    # `make up` after a crash restarts it with pg_ctl (devstack/restart.py), from the operator's shell.
    pg_ctl(cluster.data_dir, cluster.bindir, cluster.run_as, "restart", cluster.port)
    restarted = _postmaster_environment_as_superuser(cluster)
    inherited = marker in restarted
    assert not inherited, f"the restarted postmaster inherited {sorted(_names(restarted))}"
    assert _names(restarted) <= _SET_BY_THE_STACK_OR_POSTGRES, sorted(_names(restarted))
