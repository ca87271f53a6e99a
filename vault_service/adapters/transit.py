"""Vault/OpenBao Transit: the key-encryption key and the audit signing key.

The KEK wraps and unwraps data keys; the signing key signs audit checkpoints.
The service's Vault policy allows only `datakey`, `decrypt` and `rewrap` on the KEK, and only
`sign` on the signing key (plus reading both keys' metadata): it can never export, rotate,
configure or delete either key. Signatures are verified offline with the public keys
(`verify_signature`), so nobody needs Vault to check the audit trail.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault_service.adapters.vault_session import Login, VaultSession
from vault_service.domain.errors import KeysUnavailable
from vault_service.service.ports import KekVersions

AUDIT_SIGNING_KEY = "tokenvault-audit"
"""Default name of the Transit ed25519 key that signs audit checkpoints."""


class VaultStartupError(RuntimeError):
    """Vault cannot be used: unreachable, sealed, bad credentials or missing permission."""


def _transit_data(what: str, call: Callable[[], Any], session: VaultSession | None = None) -> dict[str, Any]:
    """The `data` of a Transit response; KeysUnavailable saying what failed and why.

    A 403 is told to `session`, which logs in again if its token is what Vault refuses (V50-3).
    """
    try:
        response = call()
    except (hvac.exceptions.VaultError, requests.RequestException) as error:
        if session is not None and isinstance(error, hvac.exceptions.Forbidden):
            session.refused()
        raise KeysUnavailable(f"{failed_verb(error)} {what}: {describe_vault_error(error)}") from None
    data: dict[str, Any] = response["data"]
    return data


class TransitKeyWrapper:
    """Implements the KeyWrapper port with Transit's datakey/decrypt endpoints."""

    def __init__(self, vault: hvac.Client | VaultSession, kek_name: str, mount: str = "transit") -> None:
        self._vault = vault if isinstance(vault, VaultSession) else VaultSession.fixed(vault)
        self._kek_name = kek_name
        self._mount = mount

    def new_data_key(self) -> tuple[bytes, str]:
        """A fresh 256-bit data key: (plaintext, wrapped by the newest KEK version)."""
        data = _transit_data(
            "create a data key",
            lambda: self._vault.client().secrets.transit.generate_data_key(
                name=self._kek_name, key_type="plaintext", bits=256, mount_point=self._mount
            ),
            self._vault,
        )
        return base64.b64decode(data["plaintext"]), str(data["ciphertext"])

    def unwrap(self, wrapped_key: str) -> bytes:
        """The plaintext of a wrapped data key."""
        data = _transit_data(
            "unwrap a data key",
            lambda: self._vault.client().secrets.transit.decrypt_data(
                name=self._kek_name, ciphertext=wrapped_key, mount_point=self._mount
            ),
            self._vault,
        )
        return base64.b64decode(data["plaintext"])

    def rewrap(self, wrapped_key: str) -> str:
        """The same data key wrapped by the newest KEK version (Transit never shows the plaintext)."""
        data = _transit_data(
            "rewrap a data key",
            lambda: self._vault.client().secrets.transit.rewrap_data(
                name=self._kek_name, ciphertext=wrapped_key, mount_point=self._mount
            ),
            self._vault,
        )
        return str(data["ciphertext"])

    def latest_version(self) -> int:
        """The KEK's newest version."""
        return self.kek_versions().latest

    def kek_versions(self) -> KekVersions:
        """The KEK's version settings, from the key's metadata (the service's policy reads it; it writes none)."""
        data = _transit_data(
            "read the KEK's metadata",
            lambda: self._vault.client().secrets.transit.read_key(name=self._kek_name, mount_point=self._mount),
            self._vault,
        )
        return KekVersions(
            int(data["latest_version"]),
            int(data.get("min_decryption_version") or 0),
            int(data.get("min_encryption_version") or 0),
        )

    def check_access(self) -> None:
        """Exercise every permission the service needs; VaultStartupError naming the missing one."""
        path = f"{self._mount}/{{}}/{self._kek_name}"
        with _requires(f"read {path.format('keys')}"):
            self.latest_version()
        with _requires(f"update {path.format('datakey/plaintext')}"):
            _, wrapped = self.new_data_key()
        with _requires(f"update {path.format('decrypt')}"):
            self.unwrap(wrapped)
        with _requires(f"update {path.format('rewrap')}"):
            self.rewrap(wrapped)


class TransitSigner:
    """Signs with a Transit ed25519 key the service may use to sign only (audit checkpoints).

    The private key never leaves Vault; `public_keys()` gives every version's public key, which
    is all `verify_signature` needs.
    """

    def __init__(
        self, vault: hvac.Client | VaultSession, key_name: str = AUDIT_SIGNING_KEY, mount: str = "transit"
    ) -> None:
        self._vault = vault if isinstance(vault, VaultSession) else VaultSession.fixed(vault)
        self._key_name = key_name
        self._mount = mount

    @property
    def key_name(self) -> str:
        """Name of the Transit signing key."""
        return self._key_name

    def sign(self, data: bytes) -> str:
        """Transit's signature of `data` under the newest key version, e.g. `vault:v1:<base64>`."""
        encoded = base64.b64encode(data).decode("ascii")
        result = _transit_data(
            f"sign with {self._mount}/sign/{self._key_name}",
            lambda: self._vault.client().secrets.transit.sign_data(
                name=self._key_name, hash_input=encoded, mount_point=self._mount
            ),
            self._vault,
        )
        return str(result["signature"])

    def public_keys(self) -> dict[int, str]:
        """Every version's public key: {version: raw ed25519 public key, base64}."""
        result = _transit_data(
            f"read {self._mount}/keys/{self._key_name}",
            lambda: self._vault.client().secrets.transit.read_key(name=self._key_name, mount_point=self._mount),
            self._vault,
        )
        if result.get("type") != "ed25519":
            raise KeysUnavailable(f"Transit key {self._key_name} is {result.get('type')}, not an ed25519 signing key")
        return {int(version): str(key["public_key"]) for version, key in result["keys"].items()}

    def check_access(self) -> None:
        """Sign a probe and check it with the public keys; VaultStartupError naming what is missing."""
        with _requires(f"read {self._mount}/keys/{self._key_name} (an ed25519 key)"):
            keys = self.public_keys()
        with _requires(f"update {self._mount}/sign/{self._key_name}"):
            probe = b"tokenvault: signing key check"
            if not verify_signature(keys, probe, self.sign(probe)):
                raise KeysUnavailable(f"a signature by {self._key_name} does not verify with its public keys")


class SignatureVerifier:
    """Checks signatures of a Transit signing key offline, its public keys read once (again for a new version)."""

    def __init__(self, signer: TransitSigner) -> None:
        self._signer = signer
        self._keys: dict[int, str] = {}

    def __call__(self, data: bytes, signature: str) -> bool:
        """Whether `signature` is the signing key's signature of `data`."""
        version = signature.partition(":v")[2].partition(":")[0]
        if version.isdigit() and int(version) not in self._keys:
            self._keys = self._signer.public_keys()  # a version made since: the key was rotated
        return verify_signature(self._keys, data, signature)


def verify_signature(public_keys: Mapping[int, str], data: bytes, signature: str) -> bool:
    """Whether `signature` (`vault:v<N>:<base64>`) is a valid ed25519 signature of `data`.

    Checked offline (no Vault call) with version N of `public_keys` ({version: base64}).
    False for a malformed signature or an unknown version, never an exception.
    """
    prefix, _, rest = signature.partition(":v")
    version_text, _, encoded = rest.partition(":")
    if prefix != "vault" or not version_text.isdigit() or int(version_text) not in public_keys:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_keys[int(version_text)], validate=True))
        key.verify(base64.b64decode(encoded, validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@contextmanager
def _requires(capability: str) -> Iterator[None]:
    try:
        yield
    except KeysUnavailable as error:
        raise VaultStartupError(f"the vault service's Vault policy must allow {capability}: {error}") from None


def failed_verb(error: Exception) -> str:
    """How a failed Vault call begins: Vault refused it, or it never reached a Vault that could answer."""
    if isinstance(error, requests.RequestException | hvac.exceptions.VaultDown):
        return "could not"  # not "Vault refused to": it is unreachable, sealed or down (walk, 6 Dec)
    return "Vault refused to"


def describe_vault_error(error: Exception) -> str:
    """What a Vault call's failure was, for a person: permission, sealed or down, unreachable, or Transit's refusal."""
    if isinstance(error, hvac.exceptions.Forbidden):
        return "permission denied (check the service's Vault policy)"
    if isinstance(error, hvac.exceptions.VaultDown):
        return "Vault is sealed or down"
    if isinstance(error, requests.RequestException):
        return f"cannot reach Vault ({type(error).__name__})"
    text = str(error).splitlines()[0] if str(error) else ""
    if "disallowed by policy" in text:  # Transit's "ciphertext or signature version is disallowed by policy (too old)"
        return f"{type(error).__name__}: {text} - {TOO_OLD_HINT}"
    return f"{type(error).__name__}: {text}"


TOO_OLD_HINT = (
    "Vault is up and refuses that KEK version as too old (min_decryption_version): for a live data key, it was"
    " raised before the key was rewrapped; lower it again and run `tokenvault rewrap` (docs/key-rotation.md, step 3)"
)
"""What to do when Transit refuses a wrapped data key as too old (it is not an outage)."""


def open_session(
    address: str,
    token: str | None = None,
    role_id: str | None = None,
    secret_id_file: Path | None = None,
    timeout: float = 5.0,
) -> VaultSession:
    """A Vault login kept valid (AppRole role_id + secret id file, or a token); VaultStartupError if not."""
    client = hvac.Client(url=address, timeout=timeout)
    try:
        status = client.sys.read_health_status(method="GET")
        if isinstance(status, dict) and status.get("sealed"):
            raise VaultStartupError(f"Vault at {address} is sealed: unseal it, then start the vault service")
        if role_id and secret_id_file:
            session = VaultSession.logged_in(client, approle_login(role_id, secret_id_file))
        elif token:
            client.token = token
            session = VaultSession.for_token(client)
        else:
            raise VaultStartupError("no Vault credentials: set a token, or an AppRole role id and secret id file")
        if not client.is_authenticated():
            raise VaultStartupError(f"Vault at {address} rejected the credentials")
    except requests.RequestException as error:
        raise VaultStartupError(f"cannot reach Vault at {address}: {type(error).__name__}") from None
    except hvac.exceptions.VaultError as error:
        raise VaultStartupError(f"Vault at {address} refused login: {describe_vault_error(error)}") from None
    return session


def approle_login(role_id: str, secret_id_file: Path) -> Login:
    """An AppRole login that reads the secret id from its file each time (it may be replaced)."""

    def login(client: hvac.Client) -> dict[str, Any]:
        auth: dict[str, Any] = client.auth.approle.login(role_id=role_id, secret_id=secret_id_file.read_text().strip())[
            "auth"
        ]
        return auth

    return login


def connect_vault(
    address: str,
    token: str | None = None,
    role_id: str | None = None,
    secret_id_file: Path | None = None,
    timeout: float = 5.0,
) -> hvac.Client:
    """An authenticated client, not renewed (short-lived use); VaultStartupError if not."""
    return open_session(address, token, role_id, secret_id_file, timeout).client()
