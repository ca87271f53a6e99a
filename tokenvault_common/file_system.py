"""What the file-trust rules read of the file system and of the caller, in one place (tests give fakes).

Two rules use it: the database DSN's socket-directory rule (`tokenvault_common.database_dsn`) and the
`tokenvault` command's trusted settings files (`tokenvault_cli.trusted_files`).
"""

from __future__ import annotations

import os
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
    """What the checks read of the file system and of the caller: stat, lstat, readlink, realpath, ACLs, the euid."""

    stat: Callable[[str], StatResult] = os.stat
    lstat: Callable[[str], StatResult] = os.lstat
    readlink: Callable[[str], str] = os.readlink
    realpath: Callable[[str], str] = os.path.realpath
    has_access_acl: Callable[[str], bool] = has_access_acl
    euid: Callable[[], int] = os.geteuid
