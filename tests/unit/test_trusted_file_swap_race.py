"""What the tokenvault command reads of a trusted file is the file it checked, even if its path is swapped in between.

P4's remainder (attack 39, closing note): the profile, a stack's stack.env, the CA, the client certificate and its
key were checked (owner, mode, ACL, every directory above, every link met) and then opened again by path, following
links - whoever swapped a component of the path between the check and the open picked the file read (a staging
profile, another CA). Now the path the check resolved is opened (O_NOFOLLOW at its end), the open descriptor must be
the file the check judged (device, inode, owner, mode), and its bytes are what every consumer uses: the TOML parser,
stack.env's parser, gRPC's credentials (given bytes, never the paths to open again).

Real file system; the swap is done by the test at the one point between the check and the open (the check
`trusted_files._problem` wrapped so that it swaps once after judging the path), as a neighbour racing the command
would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.certs import create_authority, issue
from devstack.envfile import write_env_file
from tokenvault_cli.settings import Settings, SettingsError, load_profile, resolve
from tokenvault_common import trusted_files

PROD = "[default]\naddress = 'prod.example:443'\n"
STAGING = "[default]\naddress = 'staging.example:443'\n"
CHANGED = "changed while it was checked"


def _swap_after_check(monkeypatch: pytest.MonkeyPatch, target: Path, swap: Callable[[], None]) -> list[Path]:
    """Run `swap` once, right after the check has judged `target` (before anything opens it); the paths checked."""
    check = trusted_files._problem
    checked: list[Path] = []

    def check_then_swap(path: Path, *args: Any, **kwargs: Any) -> Any:
        verdict = check(path, *args, **kwargs)
        checked.append(Path(path))
        if os.path.abspath(path) == str(target) and checked.count(Path(path)) == 1:
            swap()
        return verdict

    monkeypatch.setattr(trusted_files, "_problem", check_then_swap)
    return checked


def _replace(path: Path, text: str | bytes) -> Callable[[], None]:
    """Another file renamed over `path` (a new inode, the same owner and mode)."""

    def swap() -> None:
        other = path.with_name(path.name + ".other")
        other.write_bytes(text if isinstance(text, bytes) else text.encode())
        other.chmod(path.stat().st_mode & 0o777)
        os.replace(other, path)

    return swap


@pytest.fixture
def home(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    home = tmp_path / "officer"
    home.mkdir(mode=0o755)
    return home


def _profile(home: Path, kind: str) -> Path:
    """Root's/the caller's profile (0644), in `home` or, for the directory swap, in `home`/settings."""
    directory = home / "settings" if kind == "directory" else home
    directory.mkdir(mode=0o755, exist_ok=True)
    profile = directory / "profiles.toml"
    profile.write_text(PROD)
    profile.chmod(0o644)
    return profile


def _swap(kind: str, profile: Path) -> Callable[[], None]:
    """Another file renamed over the profile (file); the profile removed and a link to another file put in its place
    (link); the directory above it renamed away and a link to another directory put in its place (directory); the
    profile made writable by others (mode: the descriptor's mode is the one checked)."""
    home = profile.parent if kind != "directory" else profile.parent.parent
    staging = home / "staging" / "profiles.toml"
    staging.parent.mkdir(mode=0o755)
    staging.write_text(STAGING)
    if kind == "file":
        return _replace(profile, STAGING)
    if kind == "mode":
        return lambda: profile.chmod(0o666)

    def to_link() -> None:
        profile.unlink()
        profile.symlink_to(staging)

    def directory_to_link() -> None:
        profile.parent.rename(home / "settings.old")
        profile.parent.symlink_to(staging.parent)

    return to_link if kind == "link" else directory_to_link


@pytest.mark.parametrize("kind", ["file", "link", "directory", "mode"])
def test_a_profile_swapped_between_check_and_open_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    profile = _profile(home, kind)
    assert load_profile(profile, None)["address"] == "prod.example:443"
    _swap_after_check(monkeypatch, profile, _swap(kind, profile))
    with pytest.raises(SettingsError, match=CHANGED):
        load_profile(profile, None)
    monkeypatch.undo()
    if kind == "mode":
        with pytest.raises(SettingsError, match="may be written by others"):  # checked again: refused as it is
            load_profile(profile, None)
    else:
        assert load_profile(profile, None)["address"] == "staging.example:443"  # unswapped: read as it now is


def test_stack_env_is_read_once_from_the_file_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve() read stack.env a second time, unchecked, for its other settings: one read now, of the file checked."""
    tmp_path.chmod(0o755)
    env_file = tmp_path / "stack.env"
    genuine = {"TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:5555", "TLS_CA_CERT": str(tmp_path / "ca.pem")}
    write_env_file(env_file, genuine)
    assert resolve({"stack_dir": str(tmp_path), "role": "analyst"}, {}).address == "127.0.0.1:5555"
    planted = env_file.read_text().replace("127.0.0.1:5555", "203.0.113.9:443")
    _swap_after_check(monkeypatch, env_file, _replace(env_file, planted))
    with pytest.raises(SettingsError, match=CHANGED):
        resolve({"stack_dir": str(tmp_path), "role": "analyst"}, {})


def test_the_ca_certificate_and_key_given_to_grpc_are_the_bytes_checked(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each swapped after its check is refused; unswapped, the identity carries the bytes read, and a file changed
    after the check (before gRPC's credentials are made) changes nothing."""
    authority = create_authority(home)
    pair = issue(authority, home, "analyst")
    ca = home / "ca.pem"
    other = issue(create_authority(home / "elsewhere"), home / "elsewhere", "analyst")
    settings = Settings(address="127.0.0.1:1", ca=ca, cert=pair.cert, key=pair.key)
    for path, planted in ((ca, home / "elsewhere" / "ca.pem"), (pair.cert, other.cert), (pair.key, other.key)):
        checked = _swap_after_check(monkeypatch, path, _replace(path, planted.read_bytes()))
        genuine = path.read_bytes()
        with pytest.raises(SettingsError, match=CHANGED):
            settings.identity()
        assert path in checked
        monkeypatch.undo()
        _replace(path, genuine)()

    identity = settings.identity()
    read = (ca.read_bytes(), pair.cert.read_bytes(), pair.key.read_bytes())
    assert (identity.ca_pem, identity.cert_pem, identity.key_pem) == read
    assert "BEGIN" not in repr(identity)  # the key's bytes are never shown
    for path, planted in ((ca, home / "elsewhere" / "ca.pem"), (pair.cert, other.cert), (pair.key, other.key)):
        _replace(path, planted.read_bytes())()
    assert (identity.ca_pem, identity.cert_pem, identity.key_pem) == read
    identity.credentials()  # built from those bytes (the files now hold others)
