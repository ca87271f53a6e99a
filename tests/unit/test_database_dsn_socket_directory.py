"""Which unix-socket directories count as PostgreSQL's: theirs and every one above, no one else's (attack 32, F8).

tokenvault_common.database_dsn._unsafe_directory, on a fake file system (stat, lstat, readlink): a directory owned
by another local user (mode 0755, not writable by others) passed the earlier check, which read only S_IWOTH, and
that user caught the vault's password in clear. Now the directory and every directory above it must be owned by
root, PostgreSQL's account or this process's user and written by no one else (a sticky parent such as /tmp aside,
when the directory below is a trusted owner's). The real-socket case: tests/integration/test_socket_directory_owner.py.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import pytest

from tokenvault_common import database_dsn
from tokenvault_common.database_dsn import _unsafe_directory
from tokenvault_common.file_system import FileSystem

ME = os.geteuid()
OTHER = 4242
OTHER_GROUP = 4343


@dataclass
class Entry:
    st_mode: int
    st_uid: int = 0
    st_gid: int = 0
    st_dev: int = 0
    st_ino: int = 0


def _dir(mode: int, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(stat.S_IFDIR | mode, uid, gid)


def _fs(
    entries: dict[str, Entry],
    links: dict[str, str] | None = None,
    acls: frozenset[str] = frozenset(),
    link_owners: dict[str, int] | None = None,
) -> FileSystem:
    """A file system of `entries` (absolute paths), `links` a symbolic link's path to its target's, `acls` the paths
    carrying an access ACL, `link_owners` a link's owner when not root."""
    links = links or {}
    owners = link_owners or {}

    def resolve(path: str) -> str:
        for link, target in sorted(links.items(), key=lambda item: -len(item[0])):
            if path == link or path.startswith(link + "/"):
                return resolve(target + path[len(link) :])
        return path

    def lstat(path: str) -> Entry:
        if path in links:
            return Entry(stat.S_IFLNK | 0o777, owners.get(path, 0), 0)
        return stat_(path)

    def stat_(path: str) -> Entry:
        real = resolve(path)
        if real not in entries:
            raise FileNotFoundError(real)
        return entries[real]

    return FileSystem(stat=stat_, lstat=lstat, readlink=links.__getitem__, has_access_acl=lambda p: resolve(p) in acls)


@pytest.fixture(autouse=True)
def _postgres_is_uid_70(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's account as uid 70, group 70, whatever this machine's is."""
    trusted = (frozenset({0, ME, 70}), frozenset({0, os.getegid(), 70}))
    monkeypatch.setattr(database_dsn, "_trusted_ids", lambda: trusted)


TMP = "/tmp"  # noqa: S108 - a fake file system's
ROOT = {"/": _dir(0o755), "/srv": _dir(0o755), TMP: _dir(0o1777)}


def test_a_directory_of_another_user_not_writable_by_others_is_refused_naming_its_owner() -> None:
    fs = _fs({**ROOT, "/srv/sock": _dir(0o755, OTHER)})
    problem = _unsafe_directory("/srv/sock", fs)
    assert problem is not None and problem.startswith(f"/srv/sock is owned by uid {OTHER}, not root"), problem


def test_a_directory_of_ours_below_another_users_directory_is_refused() -> None:
    fs = _fs({**ROOT, "/srv/theirs": _dir(0o755, OTHER), "/srv/theirs/sock": _dir(0o700, ME)})
    assert (_unsafe_directory("/srv/theirs/sock", fs) or "").startswith(f"/srv/theirs is owned by uid {OTHER}")


def test_a_directory_below_one_a_foreign_group_writes_is_refused() -> None:
    fs = _fs({**ROOT, "/srv/shared": _dir(0o775, 0, OTHER_GROUP), "/srv/shared/sock": _dir(0o700, 70, 70)})
    assert _unsafe_directory("/srv/shared/sock", fs) == (
        f"/srv/shared may be written by its group (gid {OTHER_GROUP}), who could replace /srv/shared/sock in it"
    )
    fs = _fs({**ROOT, "/srv/sock": _dir(0o770, 70, OTHER_GROUP)})
    assert _unsafe_directory("/srv/sock", fs) == f"/srv/sock may be written by its group (gid {OTHER_GROUP})"


def test_postgres_s_own_directory_group_writable_by_its_group_passes_debian_layout() -> None:
    fs = _fs(
        {"/": _dir(0o755), "/var": _dir(0o755), "/run": _dir(0o755), "/run/postgresql": _dir(0o2775, 70, 70)},
        {"/var/run": "/run"},
    )
    assert _unsafe_directory("/var/run/postgresql", fs) is None
    assert _unsafe_directory("/run/postgresql", fs) is None


def test_below_sticky_tmp_only_a_directory_of_a_trusted_owner_passes() -> None:
    """The embedded stack's socket directory: /tmp/tokenvault-pg-*/data, PostgreSQL's account's, 0700."""
    stack = f"{TMP}/tokenvault-pg-x"
    fs = _fs({**ROOT, stack: _dir(0o700, 70, 70), f"{stack}/data": _dir(0o700, 70, 70)})
    assert _unsafe_directory(f"{stack}/data", fs) is None
    fs = _fs({**ROOT, f"{TMP}/squat": _dir(0o755, OTHER)})
    assert (_unsafe_directory(f"{TMP}/squat", fs) or "").startswith(f"{TMP}/squat is owned by uid {OTHER}")
    fs = _fs({**ROOT, "/srv/open": _dir(0o777, 0), "/srv/open/sock": _dir(0o700, ME)})  # not sticky: renamed away
    problem = _unsafe_directory("/srv/open/sock", fs)
    assert problem == "/srv/open may be written by others, who could replace /srv/open/sock in it"
    assert _unsafe_directory(TMP, _fs(ROOT)) == f"{TMP} may be written by others"  # sticky or not: refused


def test_a_symbolic_link_is_judged_by_where_it_leads_and_where_it_is() -> None:
    theirs = {"/srv/theirs": _dir(0o700, OTHER), "/srv/theirs/sock": _dir(0o700, ME)}
    fs = _fs({**ROOT, **theirs}, {"/srv/pg": "/srv/theirs/sock"})
    assert (_unsafe_directory("/srv/pg", fs) or "").startswith(f"/srv/theirs is owned by uid {OTHER}")
    entries = {**ROOT, "/srv/theirs": _dir(0o755, OTHER), "/srv/sock": _dir(0o700, ME)}
    fs = _fs(entries, {"/srv/theirs/link": "/srv/sock"})
    assert (_unsafe_directory("/srv/theirs/link", fs) or "").startswith(f"/srv/theirs is owned by uid {OTHER}")


def test_another_users_link_met_on_the_way_is_refused_though_it_leads_to_postgres_s_directory() -> None:
    """Review 39 (attack 39, P4's hop in the socket-directory rule): host=/srv/me/pg -> /srv/hop (a link of another
    user's, in root's /srv) -> /run/postgresql passed - the hop is on neither the path as named nor as resolved,
    and its owner could re-point it at a directory of its own once the DSN was checked (the vault's pool connects
    for hours after), and catch the password. Root's own links on the way still pass (Debian's /var/run)."""
    entries = {**ROOT, "/run": _dir(0o755), "/run/postgresql": _dir(0o2775, 70, 70), "/srv/me": _dir(0o700, ME)}
    links = {"/srv/me/pg": "/srv/hop", "/srv/hop": "/run/postgresql"}
    problem = _unsafe_directory("/srv/me/pg", _fs(entries, links, link_owners={"/srv/hop": OTHER}))
    assert problem == (
        f"/srv/hop is a symbolic link owned by uid {OTHER}, not root, PostgreSQL's account (postgres) or this"
        " process's user: that account may re-point it"
    )
    assert _unsafe_directory("/srv/me/pg", _fs(entries, links, link_owners={"/srv/me/pg": ME})) is None
    assert _unsafe_directory("/srv/me/pg", _fs(entries, links, link_owners={"/srv/me/pg": OTHER})) is not None


def test_a_missing_directory_is_judged_by_its_nearest_existing_parent() -> None:
    fs = _fs({**ROOT, "/srv/theirs": _dir(0o755, OTHER)})
    problem = _unsafe_directory("/srv/theirs/not-yet/sock", fs) or ""
    assert problem.startswith(f"/srv/theirs is owned by uid {OTHER}")
    assert _unsafe_directory("/srv/not-yet", _fs(ROOT)) is None  # /srv: root's, 0755 - only root makes it


def test_an_access_acl_that_may_write_a_roots_directory_is_refused() -> None:
    """Attack 33, A2: `user:nobody:rwx` on root's 0755 directory: stat reads 0775 root:root (the group bits are the
    ACL's mask), which the group rule passed - and nobody caught the password. The same mode without an ACL (root's
    group) passes; an ACL whose mask does not allow writing passes."""
    entries = {**ROOT, "/srv/sock": _dir(0o775)}
    problem = _unsafe_directory("/srv/sock", _fs(entries, acls=frozenset({"/srv/sock"})))
    assert problem is not None and "its access ACL" in problem, problem
    assert _unsafe_directory("/srv/sock", _fs(entries)) is None
    read_only = {**ROOT, "/srv/sock": _dir(0o755)}  # its mask allows no writing
    assert _unsafe_directory("/srv/sock", _fs(read_only, acls=frozenset({"/srv/sock"}))) is None
    above = {**ROOT, "/srv": _dir(0o775), "/srv/sock": _dir(0o755)}  # an ACL on a directory above it
    assert "its access ACL" in (_unsafe_directory("/srv/sock", _fs(above, acls=frozenset({"/srv"}))) or "")
