"""Every symbolic link met on the way to a trusted settings file is checked, not only the path named and resolved.

Attack 39, P4: the officer's profile -> another account's link -> root's `prod.toml` passed every check (the hop
is on neither the path as named nor `realpath`'s), and that account could re-point its link at root's
`staging.toml` (or another CA) at will: the CLI read whichever it chose. `untrusted_file` now resolves the path
one link at a time (at most 40, as the kernel) and applies the rule to each link (its owner) and the directories
above it. Links of root's or the caller's in directories only they may write still pass (/etc/alternatives).

Real file system, a real second account (`nobody`); giving files to it needs root.
"""

from __future__ import annotations

import os
import pwd
from itertools import pairwise
from pathlib import Path

import pytest

from tokenvault_cli.settings import SettingsError, load_profile
from tokenvault_common.file_system import FileSystem
from tokenvault_common.trusted_files import untrusted_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to a second account needs root")

PROFILE = "[default]\naddress = '127.0.0.1:1'\n"


def _give(path: Path, uid: int) -> None:
    os.lchown(path, uid, uid)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """Root's 0755 directory (under pytest's root-owned tmp dirs) with root's settings in etc/: prod and staging."""
    tmp_path.chmod(0o755)
    base = tmp_path / "hops"
    base.mkdir(mode=0o755)
    (base / "etc").mkdir(mode=0o755)
    for name in ("prod", "staging"):
        (base / "etc" / f"{name}.toml").write_text(PROFILE)
    (base / "officer").mkdir(mode=0o700)
    return base


def test_another_accounts_link_in_the_middle_is_refused_naming_it(base: Path) -> None:
    """The tester's act turned around: the hop is named, as a link its owner may re-point; the CLI refuses it."""
    nobody = pwd.getpwnam("nobody").pw_uid
    alice = base / "alice"
    alice.mkdir(mode=0o755)
    _give(alice, nobody)
    hop = alice / "current"
    hop.symlink_to(base / "etc" / "prod.toml")
    _give(hop, nobody)
    profile = base / "officer" / "profile.toml"
    profile.symlink_to(hop)
    problem = untrusted_file(profile)
    assert problem is not None and problem.startswith(f"{alice} is owned by nobody"), problem  # her directory first
    with pytest.raises(SettingsError, match="that account may change it"):
        load_profile(profile, None)

    # Her link in a directory of root's (0755: only root may replace it) is still hers to re-point.
    shared = base / "links"
    shared.mkdir(mode=0o755)
    (shared / "current").symlink_to(base / "etc" / "prod.toml")
    _give(shared / "current", nobody)
    profile.unlink()
    profile.symlink_to(shared / "current")
    assert untrusted_file(profile) == (
        f"{shared / 'current'} is a symbolic link owned by nobody (uid {nobody}), not by you or root: that account"
        " may re-point it at another file; name the file it leads to, or link to it yourself"
    )
    # and as a relative link through `..`, and as the link's own directory in a path named through a link
    profile.unlink()
    profile.symlink_to(Path("..") / "links" / "current")
    assert "is a symbolic link owned by nobody" in (untrusted_file(profile) or "")
    (base / "officer" / "via").symlink_to(shared)
    assert "is a symbolic link owned by nobody" in (untrusted_file(base / "officer" / "via" / "current") or "")

    # Root's link in her directory: she may replace it (a file of hers in its place).
    (alice / "roots").symlink_to(base / "etc" / "prod.toml")
    profile.unlink()
    profile.symlink_to(alice / "roots")
    assert (untrusted_file(profile) or "").startswith(f"{alice} is owned by nobody")


def test_links_of_root_or_the_caller_in_their_own_directories_pass(base: Path) -> None:
    """/etc/alternatives-style chains of root's links pass, and so does the caller's own link (euid given)."""
    alternatives = base / "alternatives"
    alternatives.mkdir(mode=0o755)
    (alternatives / "tokenvault.toml").symlink_to(base / "etc" / "prod.toml")
    (base / "current.toml").symlink_to(alternatives / "tokenvault.toml")
    profile = base / "officer" / "profile.toml"
    profile.symlink_to(Path("..") / "current.toml")  # relative, three links to root's file
    assert untrusted_file(profile) is None

    # A caller other than root (uid 4242): its own link in its own directory passes; another uid's is refused.
    caller = base / "caller"
    caller.mkdir(mode=0o755)
    _give(caller, 4242)
    link = caller / "profile.toml"
    link.symlink_to(alternatives / "tokenvault.toml")
    _give(link, 4242)
    assert untrusted_file(link, FileSystem(euid=lambda: 4242)) is None
    assert "is owned by uid 4242" in (untrusted_file(link) or "")  # to root, 4242 is another account

    # Root's link in a sticky directory others may write (/tmp) passes; another account's there is refused.
    sticky = base / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "roots").symlink_to(base / "etc" / "prod.toml")
    profile.unlink()
    profile.symlink_to(sticky / "roots")
    assert untrusted_file(profile) is None
    (sticky / "theirs").symlink_to(base / "etc" / "prod.toml")
    _give(sticky / "theirs", pwd.getpwnam("nobody").pw_uid)
    profile.unlink()
    profile.symlink_to(sticky / "theirs")
    assert f"{sticky / 'theirs'} is owned by nobody" in (untrusted_file(profile) or "")


def test_a_link_loop_or_more_than_forty_links_cannot_be_examined(base: Path) -> None:
    """The walk follows as many links as the kernel (40), and refuses as `stat` did beyond (not new)."""
    loop = base / "officer" / "loop"
    loop.symlink_to(loop)
    assert untrusted_file(loop) == f"{loop} cannot be examined (Too many levels of symbolic links)"  # as stat says
    chain = [base / "officer" / f"l{i}" for i in range(41)]
    chain[-1].symlink_to(base / "etc" / "prod.toml")
    for link, target in pairwise(chain):
        link.symlink_to(target)
    assert untrusted_file(chain[1]) is None  # 40 links: the kernel follows them
    assert "(Too many levels of symbolic links)" in (untrusted_file(chain[0]) or "")  # 41: ELOOP
