"""Vault/OpenBao Transit as the key-encryption key: wraps and unwraps data keys.

The service's Vault policy allows only `datakey`, `decrypt` and `rewrap` on the KEK: it can
never read, export, rotate or delete the KEK itself.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from vault_service.domain.errors import KeysUnavailable


class VaultStartupError(RuntimeError):
    """Vault cannot be used: unreachable, sealed, bad credentials or missing permission."""


class TransitKeyWrapper:
    """Implements the KeyWrapper port with Transit's datakey/decrypt endpoints."""

    def __init__(self, client: hvac.Client, kek_name: str, mount: str = "transit") -> None:
        self._client = client
        self._kek_name = kek_name
        self._mount = mount

    def _transit(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        """The `data` of a Transit response; KeysUnavailable saying what failed and why."""
        try:
            response = call()
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise KeysUnavailable(f"Vault refused to {what}: {_describe(error)}") from None
        data: dict[str, Any] = response["data"]
        return data

    def new_data_key(self) -> tuple[bytes, str]:
        """A fresh 256-bit data key: (plaintext, wrapped by the newest KEK version)."""
        data = self._transit(
            "create a data key",
            lambda: self._client.secrets.transit.generate_data_key(
                name=self._kek_name, key_type="plaintext", bits=256, mount_point=self._mount
            ),
        )
        return base64.b64decode(data["plaintext"]), str(data["ciphertext"])

    def unwrap(self, wrapped_key: str) -> bytes:
        """The plaintext of a wrapped data key."""
        data = self._transit(
            "unwrap a data key",
            lambda: self._client.secrets.transit.decrypt_data(
                name=self._kek_name, ciphertext=wrapped_key, mount_point=self._mount
            ),
        )
        return base64.b64decode(data["plaintext"])

    def rewrap(self, wrapped_key: str) -> str:
        """The same data key wrapped by the newest KEK version (Transit never shows the plaintext)."""
        data = self._transit(
            "rewrap a data key",
            lambda: self._client.secrets.transit.rewrap_data(
                name=self._kek_name, ciphertext=wrapped_key, mount_point=self._mount
            ),
        )
        return str(data["ciphertext"])

    def latest_version(self) -> int:
        """The KEK's newest version."""
        data = self._transit(
            "read the KEK's metadata",
            lambda: self._client.secrets.transit.read_key(name=self._kek_name, mount_point=self._mount),
        )
        return int(data["latest_version"])

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


@contextmanager
def _requires(capability: str) -> Iterator[None]:
    try:
        yield
    except KeysUnavailable as error:
        raise VaultStartupError(f"the vault service's Vault policy must allow {capability}: {error}") from None


def _describe(error: Exception) -> str:
    if isinstance(error, hvac.exceptions.Forbidden):
        return "permission denied (check the service's Vault policy)"
    if isinstance(error, hvac.exceptions.VaultDown):
        return "Vault is sealed or down"
    if isinstance(error, requests.RequestException):
        return f"cannot reach Vault ({type(error).__name__})"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def connect_vault(
    address: str,
    token: str | None = None,
    role_id: str | None = None,
    secret_id_file: Path | None = None,
    timeout: float = 5.0,
) -> hvac.Client:
    """An authenticated client (token, or AppRole role_id + secret_id); VaultStartupError if not."""
    client = hvac.Client(url=address, timeout=timeout)
    try:
        status = client.sys.read_health_status(method="GET")
        if isinstance(status, dict) and status.get("sealed"):
            raise VaultStartupError(f"Vault at {address} is sealed: unseal it, then start the vault service")
        if role_id and secret_id_file:
            client.auth.approle.login(role_id=role_id, secret_id=secret_id_file.read_text().strip())
        elif token:
            client.token = token
        else:
            raise VaultStartupError("no Vault credentials: set a token, or an AppRole role id and secret id file")
        if not client.is_authenticated():
            raise VaultStartupError(f"Vault at {address} rejected the credentials")
    except requests.RequestException as error:
        raise VaultStartupError(f"cannot reach Vault at {address}: {type(error).__name__}") from None
    except hvac.exceptions.VaultError as error:
        raise VaultStartupError(f"Vault at {address} refused login: {_describe(error)}") from None
    return client
