"""Private keys and credentials are never readable by another account, not even for a moment (attack 53).

A53-1: `devstack up` wrote each private key and then chmod-ed it 0600; with root's umask (022) the key
was a 0644 file in between, and another account that opened it then kept reading after the chmod -
the attacker took every client's key and revealed values as the fraud investigator. A53-1b: the same
for compose's `.env`; A53-2: make-env.py followed a symbolic link planted at its target.

Every file-system step the writer takes is watched (Python's audit hooks: each open, chmod and
rename it makes): at each one, no file in the directory that holds a secret may be readable by
group or others. The old write-then-chmod is caught at its chmod, the moment before the window closes.
"""

from __future__ import annotations

import os
import runpy
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from devstack.certs import create_stack_certificates
from devstack.envfile import write_env_file
from devstack.private_files import write_private

REPO = Path(__file__).resolve().parents[2]
MAKE_ENV = REPO / "deploy" / "compose" / "make-env.py"
_WATCHED = {"open", "os.chmod", "os.rename", "os.remove", "os.truncate"}


class _Watch:
    """What the audit hook looks at: one directory, the secrets' marker, what it saw."""

    directory: ClassVar[Path | None] = None
    marker: ClassVar[bytes] = b""
    seen: ClassVar[list[str]] = []
    steps: ClassVar[int] = 0
    busy: ClassVar[bool] = False


def _hook(event: str, _args: tuple[object, ...]) -> None:
    directory = _Watch.directory
    if directory is None or _Watch.busy or event not in _WATCHED:
        return
    _Watch.busy = True  # reading the files below raises audit events of its own
    try:
        _Watch.steps += 1
        for path in directory.rglob("*"):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077 and _Watch.marker in path.read_bytes():
                _Watch.seen.append(f"{path.name} mode {stat.S_IMODE(info.st_mode):o} at {event}")
    finally:
        _Watch.busy = False


sys.addaudithook(_hook)  # a hook cannot be removed: it is idle unless `watching` set a directory


@contextmanager
def watching(directory: Path, marker: bytes) -> Iterator[list[str]]:
    """Every readable-by-others file holding `marker` seen under `directory` while the block runs (umask 022)."""
    _Watch.directory, _Watch.marker, _Watch.seen, _Watch.steps = directory, marker, [], 0
    umask = os.umask(0o022)  # root's, as `devstack up` and `make compose-env` run
    try:
        yield _Watch.seen
    finally:
        os.umask(umask)
        _Watch.directory = None
    assert _Watch.steps > 0, "the watch saw no file-system step: it would not see the window either"


def test_the_stacks_private_keys_are_never_readable_by_others_while_they_are_written(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    with watching(tmp_path, b"PRIVATE KEY") as seen:
        _, server, clients = create_stack_certificates(certs, ca_key_dir=tmp_path / "ca")
    assert seen == []
    for key in [server.key, *(pair.key for pair in clients.values()), tmp_path / "ca" / "ca-key.pem"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key.name
    assert stat.S_IMODE(server.cert.stat().st_mode) == 0o644  # certificates stay readable by the services
    assert sorted(p.name for p in certs.iterdir() if p.name.startswith(".")) == []  # no staged file left


def test_the_stack_env_file_is_never_readable_by_others_while_it_is_written(tmp_path: Path) -> None:
    with watching(tmp_path, b"marker-credential") as seen:
        write_env_file(tmp_path / "stack.env", {"PG_ADMIN_DSN": "postgresql://admin:marker-credential@127.0.0.1/x"})
    assert seen == []
    assert stat.S_IMODE((tmp_path / "stack.env").stat().st_mode) == 0o600


def test_a_private_file_replaces_an_older_one_whole_and_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old and longer than the new one")
    target.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_compose_env_is_never_readable_by_others_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / ".env"
    monkeypatch.setattr(sys, "argv", [str(MAKE_ENV), str(target)])
    with watching(tmp_path, b"PG_ADMIN_PASSWORD") as seen:
        runpy.run_path(str(MAKE_ENV), run_name="__main__")
    assert seen == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_compose_env_refuses_a_symbolic_link_at_its_target(tmp_path: Path) -> None:
    chosen = tmp_path / "a file another account chose"
    chosen.write_text("# someone else's file\n")
    link = tmp_path / ".env"
    link.symlink_to(chosen)
    result = subprocess.run([sys.executable, "-I", "-S", str(MAKE_ENV), str(link)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "symbolic link" in result.stderr
    assert chosen.read_text() == "# someone else's file\n"  # nothing written or appended through the link
    dangling = tmp_path / "dangling.env"
    dangling.symlink_to(tmp_path / "not yet there")
    result = subprocess.run([sys.executable, "-I", "-S", str(MAKE_ENV), str(dangling)], capture_output=True, text=True)
    assert result.returncode != 0
    assert not (tmp_path / "not yet there").exists()


def _make_env(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(MAKE_ENV), str(target)], capture_output=True, text=True, timeout=30
    )


def test_compose_env_adds_nothing_to_a_file_another_account_planted(tmp_path: Path) -> None:
    """A54-1: in a directory others may write, another account's empty 0666 `.env` got all the credentials."""
    planted = tmp_path / ".env"
    planted.write_text("")
    planted.chmod(0o666)
    os.chown(planted, 65534, 65534)  # nobody's (the tests run as root, as `make compose-env` does)
    result = _make_env(planted)
    assert result.returncode != 0 and "another account's file" in result.stderr, result.stderr
    assert planted.read_text() == ""


def test_compose_env_adds_nothing_to_a_file_others_can_read(tmp_path: Path) -> None:
    own = tmp_path / ".env"
    own.write_text("PG_ADMIN_PASSWORD=kept\n")
    own.chmod(0o644)
    result = _make_env(own)
    assert result.returncode != 0 and "chmod 600" in result.stderr and "mode 644" in result.stderr, result.stderr
    assert own.read_text() == "PG_ADMIN_PASSWORD=kept\n"
    own.chmod(0o600)  # as the message says: then the missing variables are added
    result = _make_env(own)
    assert result.returncode == 0 and "added" in result.stdout, result.stderr
    assert own.read_text().startswith("PG_ADMIN_PASSWORD=kept\n") and "PG_VAULT_PASSWORD=" in own.read_text()


def test_compose_env_refuses_a_fifo_at_its_target_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / ".env"
    os.mkfifo(fifo, 0o600)
    result = _make_env(fifo)  # before: blocked opening it (killed by the timeout)
    assert result.returncode != 0 and "not a plain file" in result.stderr, result.stderr


WITHOUT_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def _without_override(target: Path) -> subprocess.CompletedProcess[str]:
    """make-env.py run as root that cannot override file modes (as any operator but root: util-linux's setpriv)."""
    return subprocess.run(
        [*WITHOUT_OVERRIDE, sys.executable, "-I", "-S", str(MAKE_ENV), str(target)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_compose_env_keeps_a_complete_env_its_owner_made_read_only(tmp_path: Path) -> None:
    """Review 53, R53-1: opening `.env` read-write to check it made a 0400 one a PermissionError traceback.

    Before A54-1 a complete `.env` its owner had made read-only was kept ("exists; keeping it"); the check opened
    it for writing too, so an operator's `make compose-env` ended in a traceback. One that lacks a variable is
    refused in words, naming what it lacks and the chmod.
    """
    env = tmp_path / ".env"
    assert _make_env(env).returncode == 0
    env.chmod(0o400)
    kept = env.read_text()
    result = _without_override(env)
    assert result.returncode == 0 and "exists; keeping it" in result.stdout, result.stderr
    env.chmod(0o600)
    env.write_text("".join(line + "\n" for line in kept.splitlines() if not line.startswith("PG_ETL_PASSWORD=")))
    env.chmod(0o400)
    result = _without_override(env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot add PG_ETL_PASSWORD" in result.stderr and "chmod 600" in result.stderr, result.stderr
    assert "PG_ETL_PASSWORD" not in env.read_text()


def test_compose_env_says_why_it_cannot_use_a_directory_or_another_accounts_private_file(tmp_path: Path) -> None:
    """Review 53, R53-1: a directory at the target, or another account's 0600 file it cannot open: a traceback."""
    (tmp_path / "dir.env").mkdir()
    result = _make_env(tmp_path / "dir.env")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not a plain file" in result.stderr, result.stderr
    theirs = tmp_path / ".env"
    theirs.write_text("PG_ADMIN_PASSWORD=theirs\n")
    theirs.chmod(0o600)
    os.chown(theirs, 65534, 65534)  # nobody's: this account may not read it
    result = _without_override(theirs)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Permission denied" in result.stderr and "theirs" not in result.stderr, result.stderr
    assert theirs.read_text() == "PG_ADMIN_PASSWORD=theirs\n"


def test_compose_env_adds_nothing_to_a_file_put_in_its_place_after_it_was_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 53, R53-1: the file is appended to through a second descriptor, which must open what was checked."""
    env = tmp_path / ".env"
    env.write_text("PG_ADMIN_PASSWORD=kept\n")
    env.chmod(0o600)
    swapped = tmp_path / "swapped in"
    swapped.write_text("# put in its place\n")
    swapped.chmod(0o600)

    def swap(event: str, args: tuple[object, ...]) -> None:
        flags = args[2] if event == "open" and len(args) > 2 else 0
        if isinstance(flags, int) and flags & os.O_APPEND and args[0] == str(env) and swapped.exists():
            os.replace(swapped, env)  # between the read and the append

    _Swap.hook = swap
    monkeypatch.setattr(sys, "argv", [str(MAKE_ENV), str(env)])
    try:
        with pytest.raises(SystemExit) as stopped:
            runpy.run_path(str(MAKE_ENV), run_name="__main__")
    finally:
        _Swap.hook = None
    assert "not the file it was a moment ago" in str(stopped.value.code), stopped.value.code
    assert env.read_text() == "# put in its place\n"  # nothing appended to the file put there


class _Swap:
    """A test's own audit hook, called for every event while set (audit hooks cannot be removed)."""

    hook: ClassVar[object] = None


def _swap_hook(event: str, args: tuple[object, ...]) -> None:
    if callable(_Swap.hook):
        _Swap.hook(event, args)


sys.addaudithook(_swap_hook)
