"""Files the embedded stack writes as root into directories another OS user owns.

`make up` and every test session start Postgres as root: the cluster's directory belongs to
the `postgres` OS user, and whoever runs as that user - any cluster's database superuser, with
`COPY ... TO PROGRAM` - can put a symbolic link there. What root then writes through a path in
that directory must not follow it: it would overwrite, and hand to `postgres`, any file of the
host (root's own included).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import SETTINGS_FILE, include_settings
from devstack.procs import StackError


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory the postgres user can reach (pytest's own temporary directories are root's, 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="tokenvault-rootfiles-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.mark.parametrize("planted_at", [SETTINGS_FILE.name, "postgresql.conf"])
def test_a_link_planted_by_the_postgres_user_does_not_make_root_overwrite_or_give_away_a_host_file(
    stack_env: dict[str, str], host_dir: Path, planted_at: str
) -> None:
    # A file only root may change, standing for /etc/shadow or root's authorized_keys.
    victim = host_dir / "root-only.conf"
    victim.write_text("root's own content\n")
    victim.chmod(0o644)
    # A new cluster's data directory as initdb leaves it: the postgres user's.
    postgres = pwd.getpwnam("postgres")
    data_dir = host_dir / "data"
    data_dir.mkdir(mode=0o700)
    if planted_at != "postgresql.conf":
        (data_dir / "postgresql.conf").write_text("# initdb's settings\n")
        os.chown(data_dir / "postgresql.conf", postgres.pw_uid, postgres.pw_gid)
    os.chown(data_dir, postgres.pw_uid, postgres.pw_gid)
    # A database superuser (the database owner of the session's stack) runs a command as the
    # postgres OS user and plants the link where root is about to copy the shipped settings.
    link = data_dir / planted_at
    command = f"ln -s {shlex.quote(str(victim))} {shlex.quote(str(link))}"
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute(f"COPY (SELECT 1) TO PROGRAM {sql.quote(command)}")
    assert link.is_symlink()

    with pytest.raises(StackError, match="refusing to write"):  # loudly: the stack does not start
        include_settings(data_dir, "postgres")  # what start_postgres does as root after initdb

    owner = victim.stat()
    assert victim.read_text() == "root's own content\n", "root wrote the cluster's settings into the linked file"
    assert (owner.st_uid, stat.S_IMODE(owner.st_mode)) == (0, 0o644), "root gave the linked file to postgres"
