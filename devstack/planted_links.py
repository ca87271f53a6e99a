"""Root writing into a directory another OS user owns, without following what that user planted there.

The embedded stack runs as root and gives each PostgreSQL cluster to the unprivileged
`postgres` OS user, which every cluster's database superuser can act as (`COPY ... TO
PROGRAM`). A path in such a directory may be a symbolic link by the time root writes it:
followed, root would overwrite (and hand to `postgres`) any file on the host. So files there
are opened with O_NOFOLLOW, must be plain files with one name, and are given away through the
open descriptor, never through the path.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from devstack.procs import StackError


def write_in_foreign_dir(
    path: Path, text: str, *, append: bool = False, new: bool = False, owner: str | None = None
) -> None:
    """Write `text` to `path` (or append it), refusing a link or a second name planted there.

    `new`: the file must not exist yet (nothing planted at all). `owner`: give the file to this
    user afterwards (through the descriptor).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a planted FIFO must not hang root
    flags |= os.O_EXCL if new else 0
    flags |= os.O_APPEND if append else 0
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        raise StackError(
            f"refusing to write {path}: {error.strerror} (something was put there: a symbolic link?)"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise StackError(f"refusing to write {path}: it is not a plain file with one name (a planted link?)")
        if not append:
            os.ftruncate(fd, 0)
        os.write(fd, text.encode())
        if owner:
            account = pwd.getpwnam(owner)
            os.fchown(fd, account.pw_uid, account.pw_gid)
    finally:
        os.close(fd)
