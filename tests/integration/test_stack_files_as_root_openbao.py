"""Root writing into OpenBao's directory of a stack whose `make up` failed half-way (second insider round).

`make up` as root runs OpenBao as `tokenvault-openbao` and gives it `<state>/openbao` (0700),
where its audit device writes. An `up` that fails after OpenBao started stops everything with
`down(keep_logs=True)`, which keeps that directory, still the openbao user's. The next `up`
writes the server's configuration `openbao.hcl` there as root with `Path.write_text` and then
`os.chown`s it by path: both follow a symbolic link the openbao user put there, so root
overwrites any file of the host and gives it to that user (devstack/planted_links.py exists to
prevent exactly this for the postgres user's directory).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.isolation import SERVICE_USERS, isolation
from devstack.openbao import start_openbao
from devstack.procs import StackError


@pytest.fixture
def state_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tokenvault-baofiles-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_a_link_left_in_openbao_s_directory_does_not_make_root_overwrite_or_give_away_a_host_file(
    state_dir: Path,
) -> None:
    assert os.geteuid() == 0, "the embedded stack isolates its services only when started as root"
    isolation(True)  # creates the service users when missing, as `make up` does
    user = SERVICE_USERS["openbao"]
    account = pwd.getpwnam(user)
    victim = state_dir / "root-only.conf"  # stands for /etc/shadow or root's authorized_keys
    victim.write_text("root's own content\n")
    victim.chmod(0o644)
    # What the failed `up` left: OpenBao's directory, the openbao user's, 0700.
    bao_dir = state_dir / "openbao"
    bao_dir.mkdir(mode=0o700)
    os.chown(bao_dir, account.pw_uid, account.pw_gid)
    # The openbao user (a compromised OpenBao, or anything running as it) plants the link.
    subprocess.run(["runuser", "-u", user, "--", "ln", "-s", str(victim), str(bao_dir / "openbao.hcl")], check=True)

    pid = None
    try:  # the next `make up` starts OpenBao again in that directory
        pid = start_openbao(state_dir / "logs" / "openbao.log", bao_dir, user).pid
    except StackError:
        pass  # refusing to start is fine: what matters is what root did to the host file
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    owner = victim.stat()
    assert victim.read_text() == "root's own content\n", "root wrote OpenBao's configuration into the linked file"
    assert (owner.st_uid, stat.S_IMODE(owner.st_mode)) == (0, 0o644), "root gave the linked file to the openbao user"
