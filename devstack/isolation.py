"""Each process of the embedded stack as its own unprivileged OS user, when started as root.

Why: a process that can read the CA's private key, or another client's key, can become any
client (issue 13, finding 3). As root, `make up` runs OpenBao, ministack, vault_service and
etl_service each as a system user of its own (created if missing; Postgres already runs as
`postgres`) and gives each one read access to its own key only (0400, owned by it). The keys of
human roles (analyst, fraud investigator, privacy officer) and the Vault root and security
tokens stay root's (0600): the operator is root. The CA's private key is not kept at all.

Not root: every process runs as the invoking user, who can read all of its own files - the
separation then holds only against other users of the machine (docs/threat-model.md).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.procs import StackError

SERVICE_USERS = {
    "openbao": "tokenvault-openbao",
    "ministack": "tokenvault-sqs",
    "vault_service": "tokenvault-vault",
    "etl_service": "tokenvault-etl",
    "lock_watchdog": "tokenvault-watchdog",
}
"""Component of the stack -> the OS user it runs as when the stack is started by root."""


@dataclass(frozen=True)
class Isolation:
    """Which OS user runs which component; empty when everything runs as the invoking user."""

    users: dict[str, str] = field(default_factory=dict)

    def user(self, component: str) -> str | None:
        """The OS user of `component`, or None (run as the invoking user)."""
        return self.users.get(component)

    def give(self, path: Path, component: str, mode: int) -> None:
        """Make `path` owned by `component`'s user (when isolated) with `mode`."""
        user = self.user(component)
        if user:
            account = pwd.getpwnam(user)
            os.chown(path, account.pw_uid, account.pw_gid)
        path.chmod(mode)

    def home(self, state_dir: Path, component: str) -> Path | None:
        """A private working directory for `component` (its HOME), owned by its user; None if not isolated."""
        if self.user(component) is None:
            return None
        directory = state_dir / "run" / component
        directory.mkdir(parents=True, exist_ok=True)
        (state_dir / "run").chmod(0o755)
        self.give(directory, component, 0o700)
        return directory


def isolation(enabled: bool) -> Isolation:
    """Separate users when `enabled` and running as root (users are created if missing)."""
    if not enabled or os.geteuid() != 0:
        return Isolation()
    for user in SERVICE_USERS.values():
        ensure_user(user)
    return Isolation(dict(SERVICE_USERS))


def ensure_user(name: str) -> None:
    """Create system user `name` (own group, no home, no login shell) unless it exists."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    for attempt in range(USERADD_ATTEMPTS):
        result = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 or "already exists" in result.stderr:  # made, or a concurrent stack made it
            return
        if "lock" not in result.stderr or attempt == USERADD_ATTEMPTS - 1:
            break
        time.sleep(0.2)  # another stack's useradd holds /etc/passwd's lock ("cannot lock /etc/passwd")
    raise StackError(f"cannot create the system user {name}: {result.stderr.strip()}")


USERADD_ATTEMPTS = 25
"""useradd fails at once while another holds /etc/passwd's lock (stacks started side by side): tried for ~5 s."""


def can_run(user: str, executable: Path | str) -> bool:
    """Whether `user` can start `executable` (e.g. not when it lives under root's 0700 home)."""
    probe = ["runuser", "-u", user, "--", str(executable), "-c", "pass"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def python_command(user: str | None, venv: Path, module: str | Path, *args: str) -> list[str]:
    """`python -m module args` (or `python script args`, for a Path) with the packages of `venv`, as `user` can run it.

    The venv's own interpreter when `user` can run it. Otherwise (a pyenv Python under
    /root, say) the system's Python of the same version, started with `-S` (no system
    site-packages that could shadow the venv's) and given the venv's site-packages. A
    script's directory is not put on the import path (`-P`): the modules beside it stay out.
    """
    own = venv / "bin" / "python"
    if user is None or can_run(user, own):
        return [str(own), *(["-P", str(module)] if isinstance(module, Path) else ["-m", module]), *args]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if Path(candidate).exists() and can_run(user, candidate):
            site_dir = venv / "lib" / f"python{version}" / "site-packages"
            run = (
                f"runpy.run_path({str(module)!r}, run_name='__main__')"
                if isinstance(module, Path)
                else f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
            )
            boot = f"import runpy, site; site.addsitedir({str(site_dir)!r}); {run}"
            return [candidate, "-S", "-c", boot, *args]
    raise StackError(
        f"user {user} cannot run {own.resolve()} (is it under a private home?) and there is no system"
        f" python{version}: install python{version} system-wide, or run the stack as an unprivileged user"
    )
