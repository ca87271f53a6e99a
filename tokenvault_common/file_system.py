"""What the file-trust rules read of the file system and of the caller, in one place (tests give fakes).

Two rules use it: the database DSN's socket-directory rule (`tokenvault_common.database_dsn`) and the
`tokenvault` command's trusted settings files (`tokenvault_common.trusted_files`). Both judge a path by the
directories above it (`chain`) as named, as resolved, and above every symbolic link met resolving it
(`links_on_the_way`): a link in the middle is on neither the path as named nor the path resolved, and
its owner may re-point it (attack 39, P4).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class StatResult(Protocol):
    """The fields of an `os.stat_result` the rules read."""

    @property
    def st_mode(self) -> int:
        """The file's type and mode bits."""
        ...

    @property
    def st_uid(self) -> int:
        """The owner's uid."""
        ...

    @property
    def st_gid(self) -> int:
        """The group's gid."""
        ...

    @property
    def st_dev(self) -> int:
        """The device the file is on."""
        ...

    @property
    def st_ino(self) -> int:
        """Its inode number (with st_dev: which file it is)."""
        ...


def has_access_acl(path: str) -> bool:
    """Whether `path` carries an access ACL beyond its mode bits (Linux keeps one as `system.posix_acl_access`).

    With one, the group bits of st_mode are the ACL's mask - the most any named user or group of it may do.
    """
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:  # a file system without extended attributes keeps no ACL
        return False


@dataclass(frozen=True)
class FileSystem:
    """What the checks read of the file system and of the caller: stat, lstat, readlink, ACLs, the euid."""

    stat: Callable[[str], StatResult] = os.stat
    lstat: Callable[[str], StatResult] = os.lstat
    readlink: Callable[[str], str] = os.readlink
    has_access_acl: Callable[[str], bool] = has_access_acl
    euid: Callable[[], int] = os.geteuid


def chain(path: str) -> list[str]:
    """`path` (absolute, normalized) and every directory above it, from `/` down."""
    parts = [part for part in path.split("/") if part]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts) + 1)]


MAX_LINKS = 40
"""The kernel's bound on symbolic links followed in one lookup (beyond it: ELOOP)."""


class Unresolvable(Exception):
    """A path `links_on_the_way` could not follow; the message names the part and why."""


def _cannot(path: str, error: OSError) -> Unresolvable:
    return Unresolvable(f"{path} cannot be examined ({error.strerror or type(error).__name__})")


def links_on_the_way(path: str, fs: FileSystem) -> tuple[list[str], str]:
    """The symbolic links met resolving `path` (absolute) one component at a time, as the kernel does, and the end.

    The end is the path it resolves to (every directory on the way a real one, reached from `/`); Unresolvable
    when it cannot be resolved. `realpath` gives only the end: a link in the middle (the caller's link ->
    another account's link -> root's file) is on neither the path as named nor the path resolved, and its
    owner may re-point it (attack 39, P4).
    """
    links: list[str] = []
    pending = [part for part in path.split("/") if part][::-1]  # a stack: the next component last
    resolved = "/"
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":  # `resolved` holds no link: its parent is the one the kernel finds
            resolved = os.path.dirname(resolved)
            continue
        current = os.path.join(resolved, part)
        try:
            info = fs.lstat(current)
        except OSError as error:
            raise _cannot(current, error) from None
        if not stat.S_ISLNK(info.st_mode):
            if pending and not stat.S_ISDIR(info.st_mode):
                raise Unresolvable(f"{current} cannot be examined (Not a directory)")
            resolved = current
            continue
        if len(links) == MAX_LINKS:
            raise Unresolvable(f"{path} cannot be examined ({os.strerror(errno.ELOOP)})")  # as `stat` said
        links.append(current)
        try:
            target = fs.readlink(current)
        except OSError as error:
            raise _cannot(current, error) from None
        if target.startswith("/"):
            resolved = "/"
        pending.extend(part for part in target.split("/")[::-1] if part)
    return links, resolved
