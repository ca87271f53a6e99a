"""The health listener on a Unix socket only the service's own uid can reach (TOKENVAULT_HEALTH_ADDRESS=unix:/path).

A plaintext TCP port for probes can be driven by any network neighbour: HTTP/2 rapid reset from
4 local processes failed half the kubelet-like probes and slowed the vault's own calls, and ~256
idle connections still failed them (attack 21, F4; review 21, R21-3). A Unix socket in a directory
that only this uid may enter (0700) is reached by this uid's processes alone - the probe the
container runtime execs in the container (`python -m vault_service.entrypoints.health_probe`) - and
no neighbour, process on the node or container in the pod, has a port to flood.

So the start is refused, naming the problem, when the directory is not ours, not a directory (a
symlink included) or open to group or others, or when the socket's path is anything but a stale
socket of ours (a symlink, another file, a socket another process still serves on). A missing
directory is created 0700; the socket is made 0600 once bound.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

UNIX_PREFIX = "unix:"
MAX_SOCKET_PATH_BYTES = 107
"""sockaddr_un's sun_path holds 108 bytes with the terminating NUL (Linux)."""


class UnsafeHealthSocket(Exception):
    """The health socket's path or directory could let another uid reach or replace it."""


def unix_socket_path(address: str) -> Path | None:
    """The socket's path of a `unix:/absolute/path` address, None for a host:port one."""
    if not address.startswith(UNIX_PREFIX):
        return None
    return Path(address[len(UNIX_PREFIX) :])


def address_problem(address: str) -> str | None:
    """Why `address` cannot be a Unix socket address for the listener, or None (also None for host:port)."""
    path = unix_socket_path(address)
    if path is None:
        return None
    if not path.is_absolute() or address.startswith(UNIX_PREFIX + "//"):
        return f"write the socket's absolute path after unix:, e.g. unix:/tmp/tokenvault-health/sock, got {address!r}"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        return f"the socket's path is longer than a Unix socket's {MAX_SOCKET_PATH_BYTES} bytes: {address!r}"
    return None


def prepare(path: Path) -> None:
    """Make `path` ready to bind: its directory this uid's alone (created 0700 if missing), no file in the way.

    Raises UnsafeHealthSocket, naming what is wrong, instead of serving where another uid could reach it.
    """
    directory = path.parent
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise UnsafeHealthSocket(f"cannot create the health socket's directory {directory}: {error.strerror}") from None
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):  # a symlink included: whoever made it chooses where it points
        raise UnsafeHealthSocket(f"the health socket's directory {directory} is not a directory (a symlink?)")
    if info.st_uid != os.geteuid():
        raise UnsafeHealthSocket(
            f"the health socket's directory {directory} belongs to uid {info.st_uid}, not this service's"
            f" ({os.geteuid()}): its owner could replace the socket"
        )
    if info.st_mode & 0o077:
        raise UnsafeHealthSocket(
            f"the health socket's directory {directory} is open to group or others (mode"
            f" {stat.S_IMODE(info.st_mode):04o}): make it 0700, so no other uid reaches the socket"
        )
    _clear_stale(path)


def _clear_stale(path: Path) -> None:
    """Remove a socket of ours left by a process that has stopped; refuse anything else at `path`."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise UnsafeHealthSocket(f"{path} exists and is not a socket of this uid (a symlink or another file)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError as error:
            if error.errno != errno.ECONNREFUSED:
                raise UnsafeHealthSocket(f"cannot tell whether {path} is still served: {error.strerror}") from None
        else:
            raise UnsafeHealthSocket(f"a running process already listens on {path}")
    path.unlink()


def restrict(path: Path) -> None:
    """The bound socket readable and writable by this uid only (the directory already keeps others out)."""
    path.chmod(0o600)
