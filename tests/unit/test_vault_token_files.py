"""The operators' Vault token files are read as ssh reads a private key, and only if no other account can replace them.

`tokenvault retire-kek-versions` and the vault's admin CLI read the security team's token from
$VAULT_SECURITY_TOKEN_FILE (tokenvault_common.trusted_files.read_token). Read by plain path, a file others
may read gave the security team's token to every local account, and one another account owns (or could put
in its place) made the command act under that account's token. Each is now refused (exit 2, naming the file
and the fix) before anything is sent: a real listener on the vault's (or Vault's) address gets nothing. The
DLQ operator's `dead-letters --token-file` is tested on the embedded stack (tests/cli/test_cli_dead_letters.py).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.certs import create_authority, issue
from tests.unit.test_cli_trusted_files import Listener
from tests.unit.vault_settings import vault_env
from tokenvault_common.file_system import FileSystem
from tokenvault_common.trusted_files import UntrustedFile, read_token
from vault_service.entrypoints.admin_cli import main as admin

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hvs.security-team-token-never-shown"  # what no message may quote
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="giving a file to another uid takes root")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """The token as `make up` leaves it: a file of the caller's, 0600, in a directory of theirs."""
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o755)
    path = directory / "vault-security-token"
    path.touch(mode=0o600)
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


def test_a_token_file_others_or_its_group_may_read_or_write_is_refused_naming_the_fix(token_file: Path) -> None:
    assert read_token(token_file) == TOKEN
    for mode in (0o644, 0o604, 0o602, 0o640, 0o620):
        token_file.chmod(mode)
        with pytest.raises(UntrustedFile, match=rf"\(mode 0{mode:o}\).*`chmod 600 {token_file}`") as refused:
            read_token(token_file)
        assert "revoke the token" in str(refused.value) and TOKEN not in str(refused.value)


@needs_root
def test_a_token_file_another_account_owns_is_refused_though_a_key_would_be_used(token_file: Path) -> None:
    """A key swapped alone fails the handshake; a token swapped alone is that account's token, used in our name."""
    nobody = pwd.getpwnam("nobody")
    os.chown(token_file, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(UntrustedFile, match=rf"{token_file} is owned by nobody \(uid {nobody.pw_uid}\), not by you"):
        read_token(token_file)
    os.chown(token_file, 0, 0)
    os.chown(token_file.parent, nobody.pw_uid, nobody.pw_gid)  # the directory: nobody may put its own file there
    with pytest.raises(UntrustedFile, match=rf"{token_file.parent} is owned by nobody"):
        read_token(token_file)


def test_a_token_file_in_a_directory_others_may_write_is_refused(token_file: Path) -> None:
    token_file.parent.chmod(0o777)
    with pytest.raises(UntrustedFile, match=rf"{token_file.parent} may be written by others, who could put a file"):
        read_token(token_file)


@needs_root
def test_roots_token_file_its_group_may_read_is_read_by_an_operator_in_that_group(token_file: Path) -> None:
    """Kubernetes' admin Job: the Secret's file is root's, group fsGroup, 0440, read by uid 10001 (review 32, F5)."""
    os.chown(token_file, 0, 10001)
    token_file.chmod(0o440)
    assert read_token(token_file, FileSystem(euid=lambda: 10001)) == TOKEN
    token_file.chmod(0o444)  # others too: refused
    with pytest.raises(UntrustedFile, match=r"may be read or written by others \(mode 0444\)"):
        read_token(token_file, FileSystem(euid=lambda: 10001))


def _retire_kek_versions(tmp_path: Path, address: str, token_file: Path) -> subprocess.CompletedProcess[str]:
    """The real `tokenvault retire-kek-versions`, the security team's certificate naming the vault at `address`."""
    directory = tmp_path / "identity"
    directory.mkdir(mode=0o755, exist_ok=True)
    pair = issue(create_authority(directory), directory, "security")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENVAULT_", "PG", "VAULT_"))}
    identity = ["--address", address, "--ca", str(directory / "ca.pem"), "--cert", str(pair.cert), "--key"]
    retire = ["retire-kek-versions", "--below", "2", "--reason", "CHG-2026-0040"]
    return subprocess.run(
        [sys.executable, "-m", "tokenvault_cli", "--deadline", "1", *identity, str(pair.key), *retire],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={
            **clean,
            "HOME": str(tmp_path),
            "PYTHONPATH": str(REPO),
            "VAULT_SECURITY_TOKEN_FILE": str(token_file),
        },
    )


def test_retire_kek_versions_with_a_token_file_others_may_read_calls_no_vault(
    tmp_path: Path, token_file: Path, listener: Listener
) -> None:
    token_file.chmod(0o644)
    refused = _retire_kek_versions(tmp_path, listener.address, token_file)
    assert refused.returncode == 2, refused.stderr
    assert f"VAULT_SECURITY_TOKEN_FILE {token_file} is refused" in refused.stderr
    assert f"`chmod 600 {token_file}`" in refused.stderr and TOKEN not in refused.stdout + refused.stderr
    assert listener.connections == 0
    token_file.chmod(0o600)  # the caller's alone: read, and the vault's address called (nothing answers there)
    called = _retire_kek_versions(tmp_path, listener.address, token_file)
    assert called.returncode != 2 and listener.connections > 0, called.stderr


def _admin_retire(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, vault: str, token: Path
) -> tuple[int, str]:
    """`python -m vault_service.admin retire-kek-versions` (its main, here), Vault at `vault`; exit code, stderr."""
    for name in [n for n in os.environ if n.startswith(("TOKENVAULT_", "VAULT_"))]:
        monkeypatch.delenv(name)
    env = vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=vault, VAULT_SECURITY_TOKEN_FILE=str(token))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = admin(["retire-kek-versions", "--below", "2", "--reason", "CHG-2026-0040"])
    return code, capsys.readouterr().err


@needs_root
def test_the_admin_cli_refuses_a_token_file_others_may_read_or_another_account_owns_asking_vault_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    token_file: Path,
    listener: Listener,
) -> None:
    token_file.chmod(0o644)
    code, error = _admin_retire(monkeypatch, capsys, tmp_path, f"http://{listener.address}", token_file)
    assert code == 2 and f"VAULT_SECURITY_TOKEN_FILE {token_file} is refused" in error, error
    assert f"`chmod 600 {token_file}`" in error and TOKEN not in error
    nobody = pwd.getpwnam("nobody")
    token_file.chmod(0o600)
    os.chown(token_file, nobody.pw_uid, nobody.pw_gid)  # nobody's token would act in the operator's name
    code, error = _admin_retire(monkeypatch, capsys, tmp_path, f"http://{listener.address}", token_file)
    assert code == 2 and f"{token_file} is owned by nobody" in error, error
    assert listener.connections == 0  # Vault was never asked about either token
    os.chown(token_file, 0, 0)  # root's own: read, and Vault asked (nothing answers there)
    code, error = _admin_retire(monkeypatch, capsys, tmp_path, f"http://{listener.address}", token_file)
    assert code == 3 and "cannot reach Vault" in error and listener.connections > 0, error
