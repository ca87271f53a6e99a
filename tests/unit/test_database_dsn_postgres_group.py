"""PostgreSQL's account's group and root's count only when no other account is in them (attack 35, N2).

Review 36 (R36-5) made this process's group count as its own only when no other account is in it; PostgreSQL's
account's group was still trusted whoever was in it. Debian's socket directory /var/run/postgresql is
postgres:postgres 2775 (setgid, group-writable, not sticky): an administrator added to group postgres could unlink
the server's socket and plant one during a restart, catching the password (attack 32, F8's act). Root's group gets
the same rule. The accounts are faked (pwd, grp), as are the directories (tests/unit/test_database_dsn_shared_group.py).
"""

from __future__ import annotations

import grp
import pwd
import stat
from dataclasses import dataclass

import pytest

from tokenvault_common import database_dsn
from tokenvault_common.database_dsn import _unsafe_directory
from tokenvault_common.file_system import FileSystem

ME, MY_GROUP = 1000, 1000
POSTGRES, POSTGRES_GROUP = 104, 104
ALICE = 4242
_REAL_TRUSTED_IDS = database_dsn._trusted_ids


@dataclass
class Entry:
    st_mode: int
    st_uid: int = 0
    st_gid: int = 0
    st_dev: int = 0
    st_ino: int = 0


@dataclass
class Group:
    gr_mem: list[str]


def _fs(entries: dict[str, Entry]) -> FileSystem:
    def stat_(path: str) -> Entry:
        if path not in entries:
            raise FileNotFoundError(path)
        return entries[path]

    return FileSystem(stat=stat_, lstat=stat_, has_access_acl=lambda path: False)


def _account(name: str, uid: int, gid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, gid, "", "/nonexistent", "/bin/false"))


def _accounts(monkeypatch: pytest.MonkeyPatch, members: dict[int, list[str]], alice_gid: int = ALICE) -> None:
    """root, postgres, this process's user (uid 1000) and alice (primary group `alice_gid`); groups' listed members."""
    accounts = {
        a.pw_uid: a
        for a in [
            _account("root", 0, 0),
            _account("postgres", POSTGRES, POSTGRES_GROUP),
            _account("me", ME, MY_GROUP),
            _account("alice", ALICE, alice_gid),
        ]
    }
    by_name = {a.pw_name: a for a in accounts.values()}

    def getpwuid(uid: int) -> pwd.struct_passwd:
        if uid not in accounts:
            raise KeyError(uid)
        return accounts[uid]

    def getpwnam(name: str) -> pwd.struct_passwd:
        if name not in by_name:
            raise KeyError(name)
        return by_name[name]

    monkeypatch.setattr(pwd, "getpwall", lambda: list(accounts.values()))
    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(grp, "getgrgid", lambda gid: Group(members.get(gid, [])))
    monkeypatch.setattr(database_dsn, "_trusted_ids", lambda: _REAL_TRUSTED_IDS(ME, MY_GROUP))


TOP = {"/": Entry(stat.S_IFDIR | 0o755), "/var": Entry(stat.S_IFDIR | 0o755), "/var/run": Entry(stat.S_IFDIR | 0o755)}
DEBIAN = {**TOP, "/var/run/postgresql": Entry(stat.S_IFDIR | stat.S_ISGID | 0o775, POSTGRES, POSTGRES_GROUP)}
"""Debian's socket directory: postgres:postgres 2775."""
ROOTS = {**TOP, "/var/run/postgresql": Entry(stat.S_IFDIR | 0o775, 0, 0)}
"""root:root 0775."""


def test_debian_s_socket_directory_is_refused_when_another_account_is_in_postgres_s_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = f"/var/run/postgresql may be written by its group (gid {POSTGRES_GROUP})"
    _accounts(monkeypatch, {POSTGRES_GROUP: ["alice"]})  # listed in it
    assert _unsafe_directory("/var/run/postgresql", _fs(DEBIAN)) == refused
    _accounts(monkeypatch, {}, alice_gid=POSTGRES_GROUP)  # its primary group
    assert _unsafe_directory("/var/run/postgresql", _fs(DEBIAN)) == refused


def test_debian_s_socket_directory_passes_when_postgres_is_alone_in_its_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _accounts(monkeypatch, {POSTGRES_GROUP: ["postgres"]})
    assert _unsafe_directory("/var/run/postgresql", _fs(DEBIAN)) is None


def test_a_directory_root_s_group_may_write_is_refused_when_another_account_is_in_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _accounts(monkeypatch, {0: ["alice"]})
    assert (
        _unsafe_directory("/var/run/postgresql", _fs(ROOTS))
        == "/var/run/postgresql may be written by its group (gid 0)"
    )
    _accounts(monkeypatch, {})
    assert _unsafe_directory("/var/run/postgresql", _fs(ROOTS)) is None
