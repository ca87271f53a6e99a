"""Processes of the stack: free ports, starting in the background, waiting, stopping by PID."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A component could not be started or configured; the message says which and why."""


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000
"""Below it sit the ports other software on a developer's machine is configured to listen on."""
FEWEST_PORTS_OUTSIDE = 1000
"""With fewer ports outside the ephemeral range (a range tuned to `1024 65535`), ports come from inside it."""
_handed_out: set[int] = set()
log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now and no outgoing connection will take.

    Picked at random outside the kernel's ephemeral range (`ip_local_port_range`), never
    twice in one process. A port from there (what binding port 0 gives) is free only until
    the process it is handed to binds it: in between, any outgoing connection on the machine
    may take it as its source port, and the listener then fails with "Address already in use"
    (a CI run lost the CLI tests' stack to it). Where the range leaves too few ports outside it,
    the kernel's choice it is, with that race, and a warning naming the range.
    """
    candidates = _this_process_slice(_ports_outside_ephemeral_range())
    if len(candidates) < FEWEST_PORTS_OUTSIDE:
        return _port_from_the_kernel(candidates)
    for _ in range(200):
        port = secrets.choice(candidates)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise StackError(f"no free TCP port on 127.0.0.1 outside the ephemeral range ({EPHEMERAL_RANGE_FILE})")


PORT_SLICE_VARIABLE = "TOKENVAULT_PORT_SLICE"
"""`i/n`: ports are picked from the i-th (from 0) of n equal slices of the range only. Processes that start stacks
side by side (parallel test processes) cannot see each other's picks: two could hand out the same port before either
binds it (review 35, R35-4). Each given a slice of its own, they never can. Inherited by the stacks they spawn."""


def _this_process_slice(ports: range) -> range:
    """`ports`, or the slice PORT_SLICE_VARIABLE gives this process (a malformed value stops the stack: StackError)."""
    value = os.environ.get(PORT_SLICE_VARIABLE, "")
    if not value:
        return ports
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise StackError(f"{PORT_SLICE_VARIABLE}={value!r}: expected i/n, 0 <= i < n (e.g. 0/2)")
    size = len(ports) // count
    return ports[index * size : (index + 1) * size]


def _ports_outside_ephemeral_range() -> range:
    low, high = 32768, 60999  # Linux's default
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(bound) for bound in EPHEMERAL_RANGE_FILE.read_text().split())
    below, above = range(LOWEST_PORT, low), range(high + 1, 65536)
    return below if len(below) >= len(above) else above


def _port_from_the_kernel(outside: range) -> int:
    _warn_ports_from_inside(len(outside), str(EPHEMERAL_RANGE_FILE))
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@functools.cache
def _warn_ports_from_inside(outside: int, range_file: str) -> None:
    """Said once per process and range, not at every port a stack asks for."""
    log.warning(
        "only %d TCP ports outside the ephemeral range (%s): the stack's ports come from inside it, where an"
        " outgoing connection may take one before its service listens (widen the range's gap to avoid it)",
        outside,
        range_file,
    )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def minimal_environment(user: str, home: Path | None = None) -> dict[str, str]:
    """PATH, LANG, HOME=`home` and USER: all a stack process gets of the operator's environment.

    Not the rest of it, which may hold credentials (a Vault token, DSNs, cloud keys) that
    whoever can read the process's /proc/<pid>/environ - its user, or PostgreSQL's superuser
    through pg_read_binary_file - would take.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(home or "/nonexistent"),
        "USER": user,
    }


def spawn(
    args: Sequence[str],
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    home: Path | None = None,
) -> int:
    """Start `args` in its own session, output to `log_file`; return its PID.

    With `user` (the caller is root): run as that user and its group only, umask 077, with a
    minimal environment (PATH, LANG, HOME=`home`, plus `env`) - not root's, which may hold
    credentials. The log file is opened here, so it stays root's (0600).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch(mode=0o600)
    written_before = log_file.stat().st_size
    pid = _popen(args, log_file, env, cwd, user, home)
    _LOG_START[pid] = written_before
    return pid


_LOG_START: dict[int, int] = {}
"""Each process `spawn` started -> the size its log file had then: a failed start shows its own lines only (W47-25)."""


def _popen(
    args: Sequence[str],
    log_file: Path,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    user: str | None,
    home: Path | None,
) -> int:
    if user is None:
        with log_file.open("ab") as log:
            return subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            ).pid
    account = pwd.getpwnam(user)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**minimal_environment(user, home), **(env or {})},
            cwd=cwd or home,
            start_new_session=True,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            umask=0o077,
        ).pid


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, pid: int | None = None, log_file: Path | None = None
) -> None:
    """Poll `check` until true; StackError naming `what` (and the log tail) on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if pid is not None and not alive(pid):
            raise StackError(f"{what} exited during start{log_tail(log_file, pid)}")
        time.sleep(0.1)
    raise StackError(f"{what} not ready after {timeout:.0f} s{log_tail(log_file, pid)}")


def log_tail(log_file: Path | None, pid: int | None = None, lines: int = 15) -> str:
    """The last `lines` of `log_file`, only those written since `spawn` started `pid` (an earlier run's are not its)."""
    if log_file is None or not log_file.exists():
        return ""
    with log_file.open("rb") as log:
        log.seek(_LOG_START.get(pid, 0) if pid is not None else 0)
        tail = log.read().decode(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_file}:\n  " + "\n  ".join(tail)


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)
