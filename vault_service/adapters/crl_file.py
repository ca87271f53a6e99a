"""Reading the client CRL file without letting what is at its path hold the reading thread.

The CRL path is written by whoever renders the CA's list (the Vault agent in the pod). What is
there is read only if it is a regular file (after symlinks: the agent's files and Kubernetes'
projected volumes are symlinks): a named pipe would block an `open` until a writer comes, a
device such as /dev/zero would be read without end. The file is opened non-blocking and
checked on its descriptor (no window between the check and the read), and read up to a cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_CRL_BYTES = 64 * 1024 * 1024
"""Larger than any list a CA publishes (a million revoked serials is about 40 MB of PEM)."""


class NotARegularFile(OSError):
    """What is at the CRL path is not a regular file of a readable size."""


def read_regular_file(path: Path, limit: int = MAX_CRL_BYTES) -> bytes:
    """The bytes of the regular file at `path`; NotARegularFile for a pipe, device, directory, or over `limit` bytes.

    Never blocks on what is at the path: it is opened with O_NONBLOCK (an open of a named pipe
    with no writer returns at once) and its type checked on the descriptor before any read.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{path} is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise NotARegularFile(f"{path} is {info.st_size} bytes, over the {limit} a CRL may have")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(descriptor, 1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise NotARegularFile(f"{path} grew over the {limit} bytes a CRL may have while read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
        stat.S_ISDIR: "a directory",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")
