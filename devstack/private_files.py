"""Files only their owner may read (private keys, credentials), never readable by anyone else for a moment.

Writing a file and then `chmod`-ing it leaves it readable by every account on the host between
the two steps (the process's umask, 022 for root, makes a new file 0644), and a process that opens
it in that moment keeps its descriptor after the `chmod`: attack 53 (A53-1) took every client's
private key that way while `devstack up` wrote them, then revealed values as the fraud investigator.
So the bytes go into a new file created with its final mode (O_EXCL: nothing planted there is
opened) in the target's directory, which then replaces the target in one rename: the name shows
either the old file or the finished new one, and no other account ever holds the new one open.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` as a file created with `mode` (owner only by default), replacing any file there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(8)}.new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any others could use
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
