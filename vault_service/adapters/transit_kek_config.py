"""The KEK's version settings in Transit, with the operator's own Vault token.

The vault service's AppRole may not configure the KEK; the security team's policy
(config/vault/tokenvault-security.hcl) may write `min_decryption_version` and
`min_encryption_version` on `transit/keys/<kek>/config`, and nothing else there. This adapter
is what `retire-kek-versions` writes with, so Vault's audit device names the operator too.
"""

from __future__ import annotations

import hvac
import hvac.exceptions
import requests

from vault_service.adapters.transit import describe_vault_error, failed_verb
from vault_service.domain.errors import InvalidRequest, KeysUnavailable, PermissionDenied
from vault_service.service.ports import KekVersions

SECURITY_POLICY_FILE = "config/vault/tokenvault-security.hcl"


class TransitKekConfig:
    """Implements the KekConfig port: reads `transit/keys/<kek>`, writes `transit/keys/<kek>/config`."""

    def __init__(self, address: str, token: str, kek_name: str, mount: str = "transit", timeout: float = 5.0) -> None:
        self._client = hvac.Client(url=address, token=token, timeout=timeout)
        self._kek_name = kek_name
        self._mount = mount

    @property
    def name(self) -> str:
        """The KEK's name in Transit."""
        return self._kek_name

    def versions(self) -> KekVersions:
        """Latest version, min_decryption_version, min_encryption_version, as Transit reports them."""
        path = f"{self._mount}/keys/{self._kek_name}"
        try:
            data = self._client.secrets.transit.read_key(name=self._kek_name, mount_point=self._mount)["data"]
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise _translated(error, f"read {path}") from None
        return KekVersions(
            int(data["latest_version"]), int(data["min_decryption_version"]), int(data["min_encryption_version"])
        )

    def set_minimums(self, min_decryption: int, min_encryption: int) -> None:
        """One write of both settings (Transit checks min_encryption >= min_decryption after applying both).

        Not hvac's update_key_configuration: it refuses min_encryption_version == min_decryption_version,
        which Transit takes and the runbook sets.
        """
        path = f"{self._mount}/keys/{self._kek_name}/config"
        try:
            self._client.write_data(
                path, data={"min_decryption_version": min_decryption, "min_encryption_version": min_encryption}
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise _translated(error, f"write {path}") from None


def _translated(error: Exception, what: str) -> Exception:
    """The port error for a Vault refusal or an unreachable Vault, saying what was tried."""
    if isinstance(error, hvac.exceptions.Forbidden):
        return PermissionDenied(
            f"Vault refused to {what} with your token (permission denied): it needs the tokenvault-security"
            f" policy ({SECURITY_POLICY_FILE})"
        )
    if isinstance(error, hvac.exceptions.InvalidRequest):
        text = str(error).splitlines()[0] if str(error) else ""
        return InvalidRequest(f"Transit refused to {what}: {text}")
    return KeysUnavailable(f"{failed_verb(error)} {what}: {describe_vault_error(error)}")
