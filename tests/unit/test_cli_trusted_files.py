"""The tokenvault command refuses settings another local account could change, and a password on its command line.

Attack 37 (observations): the profile file was read whatever its mode and owner, so another local account able to
write it (or the directory it is in) could point the command at a server of its own - which would then answer an
investigator's reveals and be told an officer's erasures; and `--dsn` took a database password on the command line,
where every local account reads it (ps, /proc/PID/cmdline). Now the profile, a stack's stack.env, the CA and client
certificates must be the caller's or root's and written by no one else (every directory above them too), the client
key may be read by no one else (ssh's rule), and a `--dsn` holding a password is refused (exit 2) with where to put
it instead; the same DSN from TOKENVAULT_ANALYST_DSN or a profile readable by its owner only is used.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from devstack.certs import create_authority, issue
from tokenvault_cli.app import cli
from tokenvault_cli.settings import Settings, SettingsError, load_profile, refuse_command_line_dsn
from tokenvault_common.file_system import FileSystem
from tokenvault_common.trusted_files import UntrustedFile, read_private_key, untrusted_file

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Pw-0f-the-analyst"  # what no message may quote
IP_TOKEN = "ip_" + "a" * 22
ROOT = os.geteuid() == 0


@dataclass
class Identity:
    directory: Path
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    """A CA and a client certificate, as an analyst keeps them: files of their own, the key 0600."""
    directory = tmp_path / "tokenvault"
    directory.mkdir(mode=0o755)
    pair = issue(create_authority(directory), directory, "analyst")
    return Identity(directory, directory / "ca.pem", pair.cert, pair.key)


def _profile(identity: Identity, address: str = "127.0.0.1:1", dsn: str | None = None) -> Path:
    path = identity.directory / "profiles.toml"
    text = f'[default]\naddress = "{address}"\nca = "ca.pem"\ncert = "analyst.pem"\nkey = "analyst-key.pem"\n'
    if dsn is not None:
        text += f'analyst_dsn = "{dsn}"\n'
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_a_profile_others_may_write_is_refused_naming_it_and_the_fix(identity: Identity) -> None:
    profile = _profile(identity)
    assert load_profile(profile, None)["address"] == "127.0.0.1:1"
    profile.chmod(0o666)
    with pytest.raises(SettingsError, match=rf"{profile} may be written by others: `chmod go-w {profile}`") as refused:
        load_profile(profile, None)
    assert "could point tokenvault at a server of its own" in str(refused.value)


def test_a_profile_in_a_directory_others_may_write_is_refused_unless_it_is_sticky(identity: Identity) -> None:
    profile = _profile(identity)
    identity.directory.chmod(0o777)  # others could put a profile of theirs in its place
    with pytest.raises(
        SettingsError, match=rf"{identity.directory} may be written by others, who could put a file in place"
    ):
        load_profile(profile, None)
    identity.directory.chmod(0o1777)  # as /tmp: others may neither rename nor remove our file
    assert load_profile(profile, None)["address"] == "127.0.0.1:1"


@pytest.mark.skipif(not ROOT, reason="giving a file to another uid, or a group to it, takes root")
def test_a_profile_of_another_account_or_writable_by_a_shared_group_is_refused(identity: Identity) -> None:
    profile = _profile(identity)
    nobody = pwd.getpwnam("nobody")
    os.chown(profile, nobody.pw_uid, os.getegid())
    with pytest.raises(SettingsError, match=rf"{profile} is owned by nobody \(uid {nobody.pw_uid}\), not by you or"):
        load_profile(profile, None)
    os.chown(profile, 0, nobody.pw_gid)  # root's, but its group (nobody's primary group) may write it
    profile.chmod(0o664)
    with pytest.raises(SettingsError, match=rf"{profile} may be written by its group \S+ \(gid {nobody.pw_gid}\)"):
        load_profile(profile, None)
    profile.chmod(0o644)
    assert load_profile(profile, None)["address"] == "127.0.0.1:1"


def test_a_write_acl_counts_as_others_writing(identity: Identity) -> None:
    profile = _profile(identity)
    profile.chmod(0o664)  # with an access ACL, these group bits are its mask: a named user may write
    with_acl = FileSystem(has_access_acl=lambda path: path == str(profile))
    assert untrusted_file(profile, with_acl) == (
        f"{profile} may be written by the users or groups its access ACL names: `chmod go-w {profile}`"
    )


def test_a_profile_holding_a_password_must_be_read_by_its_owner_only(identity: Identity) -> None:
    dsn = f"postgresql://analyst:{PASSWORD}@db.example/tokenvault?sslmode=verify-full"
    profile = _profile(identity, dsn=dsn)
    readable = r"analyst_dsn holds a password, and others may read the file \(mode 0644"
    with pytest.raises(SettingsError, match=readable) as refused:
        load_profile(profile, None)
    assert PASSWORD not in str(refused.value)
    profile.chmod(0o600)
    assert load_profile(profile, None)["analyst_dsn"] == dsn


def test_the_ca_and_client_certificate_must_be_ours_alone_to_change(identity: Identity) -> None:
    settings = Settings(address="127.0.0.1:1", ca=identity.ca, cert=identity.cert, key=identity.key)
    assert settings.identity().ca == identity.ca
    identity.ca.chmod(0o646)
    with pytest.raises(SettingsError, match=rf"the CA certificate {identity.ca} is refused: .* written by others"):
        settings.identity()
    identity.ca.chmod(0o644)
    identity.cert.chmod(0o666)
    with pytest.raises(SettingsError, match=r"could make tokenvault act as someone else"):
        settings.identity()


def test_a_private_key_others_or_its_group_may_read_is_refused_as_ssh_does(identity: Identity) -> None:
    assert read_private_key(identity.key).data == identity.key.read_bytes()
    for mode in (0o644, 0o640, 0o604, 0o620):
        identity.key.chmod(mode)
        settings = Settings(address="127.0.0.1:1", ca=identity.ca, cert=identity.cert, key=identity.key)
        with pytest.raises(SettingsError, match=rf"the client key {identity.key} is refused: .*\(mode 0{mode:o}\)"):
            settings.identity()


@pytest.mark.skipif(not ROOT, reason="giving a file to another uid takes root")
def test_a_key_another_account_owns_and_alone_may_read_is_used(identity: Identity) -> None:
    """`make up` as root gives the ETL's key to the ETL's account (0400); root acting as the ETL reads it, as ssh
    reads keys of other owners: swapped alone, a key does not match the certificate."""
    nobody = pwd.getpwnam("nobody")
    os.chown(identity.key, nobody.pw_uid, nobody.pw_gid)
    identity.key.chmod(0o400)
    assert read_private_key(identity.key).data == identity.key.read_bytes()
    identity.key.chmod(0o404)
    with pytest.raises(UntrustedFile, match=r"may be read or written by others \(mode 0404\)"):
        read_private_key(identity.key)


def test_a_password_in_a_dsn_given_on_the_command_line_is_refused_without_quoting_it() -> None:
    for dsn in (
        f"postgresql://analyst:{PASSWORD}@db.example/tokenvault?sslmode=verify-full",
        f"host=db.example dbname=tokenvault user=analyst password={PASSWORD} sslmode=verify-full",
        f"postgresql://analyst@db.example/tokenvault?sslmode=verify-full&sslpassword={PASSWORD}",
        f"host='db.example password={PASSWORD} sslmode=verify-full",  # libpq cannot read it: a password still
    ):
        with pytest.raises(SettingsError, match="refused, every local account can read the command line") as refused:
            refuse_command_line_dsn(dsn)
        assert PASSWORD not in str(refused.value) and "~/.pgpass" in str(refused.value)
    refuse_command_line_dsn("postgresql://analyst@db.example/tokenvault?sslmode=verify-full")  # ~/.pgpass holds it


def test_the_command_refuses_dsn_s_password_on_its_command_line_only(tmp_path: Path) -> None:
    dsn = f"postgresql://analyst:{PASSWORD}@127.0.0.1:1/tokenvault?require_auth=scram-sha-256"
    query = ["reveal", "--purpose", "CASE-1", "--query", "SELECT 1"]
    env = {"HOME": str(tmp_path), "TOKENVAULT_ANALYST_DSN": None, "PGPASSFILE": str(tmp_path / "none")}
    given = CliRunner().invoke(cli, ["--dsn", dsn, *query], env=env)
    assert given.exit_code == 2 and "--dsn holds a password: refused" in given.output
    assert PASSWORD not in given.output
    from_env = CliRunner().invoke(cli, query, env={**env, "TOKENVAULT_ANALYST_DSN": dsn})
    assert "--dsn holds" not in from_env.output  # taken: it goes on to the database (which is not there)


class Listener:
    """A TCP port that counts the connections it is sent, closing each: the attacker's server."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


def _tokenvault(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENVAULT_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "tokenvault_cli", "--deadline", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=home,
        env={**clean, "HOME": str(home), "PYTHONPATH": str(REPO), "PGPASSFILE": str(home / "none"), **env},
    )


def test_a_server_named_by_a_profile_another_account_may_write_is_never_called(
    identity: Identity, listener: Listener
) -> None:
    """The real command and a real listener: the attacker's address in a profile others may write gets nothing."""
    profile = _profile(identity, address=listener.address)
    profile.chmod(0o666)
    reveal = ["--profile-file", str(profile), "reveal", IP_TOKEN, "--purpose", "CASE-1"]
    refused = _tokenvault(identity.directory, *reveal)
    assert refused.returncode == 2, refused.stderr
    assert f"`chmod go-w {profile}`" in refused.stderr and listener.connections == 0
    profile.chmod(0o644)  # the owner's own profile: used, and its address called (nothing answers there)
    called = _tokenvault(identity.directory, *reveal)
    assert called.returncode == 1 and listener.connections > 0, called.stderr


def test_a_dsn_with_a_password_on_the_command_line_reaches_no_database(identity: Identity, listener: Listener) -> None:
    """The real command and a real listener on the database's address: a --dsn with a password connects nowhere."""
    profile = _profile(identity)
    dsn = f"postgresql://analyst:{PASSWORD}@{listener.address}/tokenvault?require_auth=scram-sha-256"
    query = ["--profile-file", str(profile), "reveal", "--purpose", "CASE-1", "--query", "SELECT 1"]
    refused = _tokenvault(identity.directory, "--dsn", dsn, *query)
    assert refused.returncode == 2 and "TOKENVAULT_ANALYST_DSN" in refused.stderr, refused.stderr
    assert PASSWORD not in refused.stderr and listener.connections == 0
    taken = _tokenvault(identity.directory, *query, TOKENVAULT_ANALYST_DSN=dsn)  # the environment: only ours to read
    assert taken.returncode != 0 and listener.connections == 1, taken.stderr
    assert stat.S_IMODE(profile.stat().st_mode) == 0o644
