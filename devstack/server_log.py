"""The embedded cluster's server log, bounded in total size (review 35, R35-2): `python server_log.py PATH BYTES FILES`.

The postmaster's output (stdout and stderr, as `pg_ctl` without `-l` leaves them) is piped into this process, which
writes it to PATH with the standard library's RotatingFileHandler: past BYTES the file is renamed PATH.1 (PATH.1 to
PATH.2, ..., the oldest of FILES rotated ones deleted) and a new PATH begun. So the current log is always at PATH and
the whole log takes at most (FILES + 1) x BYTES. It ends by itself at end of input: when the postmaster and every
server process have exited.

Why: each failing statement is logged whole and an error's message quotes its input, so any login's errors wrote
1.16 GB of server.log in 13 s, the data disk filled, the checkpointer PANICked and the server stayed down (crash
recovery does not remove a log). PostgreSQL's own logging_collector cannot bound the total: size-based rotation
(log_rotation_size) appends to a file of the same name; log_truncate_on_rotation truncates only on time-based rotation.

Standard library only: it may run as the cluster's user under the system's Python (devstack.isolation.python_command).
Bytes are copied as they are (latin-1 maps each byte to one character), in reads of at most CHUNK bytes, so a file
never passes BYTES (each rotation happens before a read that would pass it).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys

CHUNK = 1 << 16
"""Bytes read from the pipe at most at once: each is written (and flushed) as it comes."""


def copy(fd: int, path: str, max_bytes: int, rotated: int) -> None:
    """Copy `fd` to `path` until end of input, rotating past `max_bytes` and keeping `rotated` older files."""
    if max_bytes <= CHUNK or rotated < 1:  # a chunk must fit in a file; without a rotated file there is no rotation
        raise ValueError(f"need BYTES > {CHUNK} and FILES >= 1, got {max_bytes}, {rotated}")
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=rotated, encoding="latin-1")
    handler.terminator = ""  # the bytes as they came: no newline added
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        while chunk := os.read(fd, CHUNK):
            handler.emit(logging.makeLogRecord({"msg": chunk.decode("latin-1")}))
    finally:
        handler.close()


def main(argv: list[str]) -> None:
    """`server_log.py PATH BYTES FILES`: copy standard input to PATH, rotated (the module's docstring)."""
    path, max_bytes, rotated = argv[1], int(argv[2]), int(argv[3])
    os.umask(0o077)  # as pg_ctl's own log file: the cluster's user's only
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends with the postmaster's output, not with a terminal's ^C
    copy(sys.stdin.fileno(), path, max_bytes, rotated)


if __name__ == "__main__":
    main(sys.argv)
