"""This process's group counts as its own only when no other account is in it (review 36, R36-5).

tokenvault_common.database_dsn trusted a socket directory that root, PostgreSQL's account or this process's user
owns and that no one else may write - and counted this process's group as no one else, whoever shared it. Where
people share a primary group (SUSE's `users`) a root:users 0775 directory passed, and every member could plant the
socket and catch the password (attack 32, F8's act, through a group). The accounts are faked (pwd, grp); the
directories too (as tests/unit/test_database_dsn_socket_directory.py).
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
"""This process's user and group, as a person's on a shared machine (the suite may run as root, whose group counts)."""
OTHER = 4242
_REAL_TRUSTED_IDS = database_dsn._trusted_ids


@dataclass
class Entry:
    st_mode: int
    st_uid: int = 0
    st_gid: int = 0
    st_dev: int = 0
    st_ino: int = 0


def _fs(entries: dict[str, Entry]) -> FileSystem:
    def stat_(path: str) -> Entry:
        if path not in entries:
            raise FileNotFoundError(path)
        return entries[path]

    return FileSystem(stat=stat_, lstat=stat_, has_access_acl=lambda path: False)


def _account(name: str, uid: int, gid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, gid, "", "/nonexistent", "/bin/false"))


@dataclass
class Group:
    gr_mem: list[str]


def _accounts(monkeypatch: pytest.MonkeyPatch, others: list[pwd.struct_passwd], members: list[str]) -> None:
    """The machine's accounts: this user (its group MY_GROUP, of `members`), `others`; no postgres account."""
    me = _account("me", ME, MY_GROUP)
    accounts = {a.pw_uid: a for a in [me, *others]}

    def getpwuid(uid: int) -> pwd.struct_passwd:
        if uid not in accounts:
            raise KeyError(uid)
        return accounts[uid]

    def getpwnam(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwall", lambda: list(accounts.values()))
    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(grp, "getgrgid", lambda gid: Group(members if gid == MY_GROUP else []))
    monkeypatch.setattr(database_dsn, "_trusted_ids", lambda: _REAL_TRUSTED_IDS(ME, MY_GROUP))


ROOT = {"/": Entry(stat.S_IFDIR | 0o755), "/srv": Entry(stat.S_IFDIR | 0o755)}
SHARED_DIRECTORY = {**ROOT, "/srv/sock": Entry(stat.S_IFDIR | 0o775, 0, MY_GROUP)}
"""root:<this process's group> 0775: what SUSE's root:users would be."""


def test_a_directory_this_process_s_group_may_write_is_refused_when_another_account_is_in_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _accounts(monkeypatch, [_account("neighbour", OTHER, MY_GROUP)], [])  # its primary group too
    assert (
        _unsafe_directory("/srv/sock", _fs(SHARED_DIRECTORY))
        == f"/srv/sock may be written by its group (gid {MY_GROUP})"
    )
    _accounts(monkeypatch, [_account("neighbour", OTHER, OTHER)], ["neighbour"])  # listed in it
    assert (
        _unsafe_directory("/srv/sock", _fs(SHARED_DIRECTORY))
        == f"/srv/sock may be written by its group (gid {MY_GROUP})"
    )


def test_a_directory_of_this_process_s_own_group_passes_when_no_other_account_is_in_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user-private group (Debian's, Fedora's), or a container's uid:gid of no account's."""
    _accounts(monkeypatch, [_account("neighbour", OTHER, OTHER)], ["me"])
    assert _unsafe_directory("/srv/sock", _fs(SHARED_DIRECTORY)) is None
