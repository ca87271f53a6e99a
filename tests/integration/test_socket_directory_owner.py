"""A unix-socket DSN whose directory another local user owns is refused at start (attack 32, F8).

The DSN check read only the directory's S_IWOTH: `/tmp/...` owned by `nobody` (standing for a neighbour service's
user), mode 0755, passed - and `nobody`, listening on `.s.PGSQL.5432` there and asking for the password in clear,
caught the vault's password at its bootstrap (the tester's run). Now the vault's configuration is refused naming
the directory and its owner, before any connection: the neighbour's listener gets nothing. With require_auth (as for
/tmp) it passes; so do PostgreSQL's own directories (the embedded stack's, /var/run/postgresql). Real directories
and a real listener, run as root (as CI is: it makes a directory another user's).
"""

from __future__ import annotations

import os
import pwd
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.unit.vault_settings import vault_env
from tokenvault_common.database_dsn import password_exposed
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig

FAKE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(4); s.settimeout(8)
try:
    c, _ = s.accept()
    open(sys.argv[2], "wb").write(c.recv(4096))  # the startup message: anyone came
except socket.timeout:
    pass
"""
V = "TOKENVAULT_DATABASE_DSN"


def test_a_socket_directory_of_another_user_is_refused_naming_it_and_its_owner(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "makes a directory another user's: run it as root (CI does)"
    directory = Path(tempfile.mkdtemp(prefix="neighbour-sock-", dir="/tmp"))
    directory.chmod(0o755)
    os.chown(directory, 65534, 65534)  # nobody: not this process's user, not root, not postgres; no o+w
    script = directory / "fake.py"
    script.write_text(FAKE)
    came = directory / "came"  # the listener (nobody) records there whether anyone connected
    fake = subprocess.Popen(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-S", str(script), str(directory / ".s.PGSQL.5432"),
         str(came)]
    )  # fmt: skip
    try:
        for _ in range(50):
            if (directory / ".s.PGSQL.5432").exists():
                break
            time.sleep(0.1)
        dsn = f"host={directory} port=5432 dbname=tokenvault user=tokenvault_vault password=hunter2 connect_timeout=3"
        with pytest.raises(ConfigError) as refused:
            VaultServiceConfig.from_env({**vault_env(tmp_path), V: dsn})
        message = str(refused.value)
        assert f"a unix socket in {directory} ({directory} is owned by nobody (uid 65534)" in message, message
        assert "require_auth=scram-sha-256" in message and "hunter2" not in message
        assert password_exposed(V, f"{dsn} require_auth=scram-sha-256", {}) is None  # as for /tmp
        fake.kill()
        fake.wait(5)
        assert not came.exists()  # nothing was sent to the neighbour
    finally:
        fake.kill()
        shutil.rmtree(directory, ignore_errors=True)


def test_postgres_s_own_socket_directories_pass(tmp_path: Path) -> None:
    """The embedded stack's (a directory of PostgreSQL's account in /tmp, 0700, its data directory in it) and
    Debian's /var/run/postgresql (postgres:postgres 2775, through the /var/run link) where the package made it."""
    account = pwd.getpwnam("postgres")
    parent = Path(tempfile.mkdtemp(prefix="tokenvault-pg-", dir="/tmp"))
    try:
        (parent / "data").mkdir(mode=0o700)
        for path in (parent, parent / "data"):
            os.chown(path, account.pw_uid, account.pw_gid)
        assert password_exposed(V, f"host={parent / 'data'} user=vault password=pw dbname=tokenvault", {}) is None
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    if Path("/var/run/postgresql").is_dir():
        assert password_exposed(V, "host=/var/run/postgresql user=vault password=pw dbname=tokenvault", {}) is None


def _access_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """Linux's system.posix_acl_access value: version 2, then (tag, permissions, id) per entry (setfacl's form)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


def test_a_roots_socket_directory_that_an_acl_lets_another_user_write_is_refused(tmp_path: Path) -> None:
    """Attack 33, A2: root's 0755 directory with the ACL entry user:nobody:rwx reads 0775 root:root (the group bits
    are the ACL's mask), which the group rule passed, and nobody caught the vault's password. Now refused."""
    assert os.geteuid() == 0, "makes a directory with an ACL root alone may set here: run it as root (CI does)"
    parent = Path(tempfile.mkdtemp(prefix="acl-sock-", dir="/tmp"))
    try:
        parent.chmod(0o755)
        directory = parent / "sock"
        directory.mkdir(mode=0o755)
        anyone = 0xFFFFFFFF  # the id field of the owner, group, mask and other entries
        user_obj, named_user, group_obj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
        os.setxattr(
            directory,
            "system.posix_acl_access",
            _access_acl([(user_obj, 7, anyone), (named_user, 7, 65534), (group_obj, 5, anyone), (mask, 7, anyone),
                         (other, 5, anyone)]),
        )  # fmt: skip
        assert directory.stat().st_mode & 0o777 == 0o775 and directory.stat().st_uid == 0
        dsn = f"host={directory} port=5432 dbname=tokenvault user=tokenvault_vault password=hunter2 connect_timeout=3"
        with pytest.raises(ConfigError) as refused:
            VaultServiceConfig.from_env({**vault_env(tmp_path), V: dsn})
        message = str(refused.value)
        assert f"{directory} may be written by the users or groups its access ACL names" in message, message
        assert "hunter2" not in message
    finally:
        shutil.rmtree(parent, ignore_errors=True)
