"""Who runs an administrative command: the identity behind the operator's own Vault token.

The audit log names the person from what Vault says about their token
(`auth/token/lookup-self`: display name, entity, accessor), never from a flag they type. A
token Vault does not know, or one without an administrative policy, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import requests

from tokenvault_common.trusted_files import UntrustedFile, read_token

ADMIN_POLICIES = ("tokenvault-security", "root")
"""A token needs one of these Vault policies to run administrative commands."""


class OperatorRefused(RuntimeError):
    """The operator's Vault token is missing, unknown, expired or not authorized; says which."""


class OperatorTokenFileRefused(OperatorRefused):
    """$VAULT_SECURITY_TOKEN_FILE is refused: others may read it, or another account could replace it.

    A setting to fix (exit 2): Vault was not asked.
    """


class OperatorNotLookedUp(OperatorRefused):
    """Vault could not be asked about the token (unreachable): nothing is known of it, either way."""


@dataclass(frozen=True)
class OperatorIdentity:
    """What Vault says about the operator's token."""

    display_name: str
    """Vault's display name of the token, e.g. `oidc-alice@example.com` or `token-security-team`."""
    entity_id: str
    """The Vault identity entity behind the token ('' for tokens made directly, without a login)."""
    accessor: str
    """The token's accessor: identifies (and can revoke) the token without being a credential."""
    policies: tuple[str, ...]
    """The token's policies."""

    @property
    def actor(self) -> str:
        """How the audit log names the operator."""
        entity = f" entity={self.entity_id}" if self.entity_id else ""
        return f"vault:{self.display_name}{entity} accessor={self.accessor}"


def operator_token(env: Mapping[str, str]) -> str:
    """The operator's Vault token: $VAULT_TOKEN, else the file named by $VAULT_SECURITY_TOKEN_FILE.

    The file is read as tokenvault_common.trusted_files.read_token reads it: OperatorTokenFileRefused, naming the
    file and the fix, when others (or, the caller's own, its group) may read or write it or another local account
    could replace it - that account's token would act in the operator's name.
    """
    if env.get("VAULT_TOKEN", "").strip():
        return env["VAULT_TOKEN"].strip()
    token_file = env.get("VAULT_SECURITY_TOKEN_FILE", "").strip()
    if token_file:
        try:
            return read_token(Path(token_file))
        except UntrustedFile as error:
            raise OperatorTokenFileRefused(f"VAULT_SECURITY_TOKEN_FILE {token_file} is refused: {error}") from None
        except OSError as error:
            raise OperatorRefused(f"cannot read VAULT_SECURITY_TOKEN_FILE {token_file}: {error.strerror}") from None
    raise OperatorRefused(
        "administrative commands record who runs them from your own Vault token: log in"
        " (`vault login` / `bao login`) and set VAULT_TOKEN, or VAULT_SECURITY_TOKEN_FILE"
    )


def authenticate_operator(
    vault_address: str,
    token: str,
    allowed_policies: Sequence[str] = ADMIN_POLICIES,
    timeout: float = 5.0,
    vault_named: str | None = None,
) -> OperatorIdentity:
    """The identity of `token` from Vault (lookup-self); OperatorRefused if Vault does not vouch for it.

    `vault_named`: how the messages name Vault (default `Vault at <address>`; the vault service, answering a
    client, says `Vault`: its OpenBao's address is not the caller's to know). No message quotes the token.
    """
    vault = vault_named or f"Vault at {vault_address}"
    client = hvac.Client(url=vault_address, token=token, timeout=timeout)
    try:
        data = client.auth.token.lookup_self()["data"]
    except hvac.exceptions.Forbidden:
        raise OperatorRefused(
            f"{vault} does not accept this token (unknown, expired or revoked): log in again"
        ) from None
    except hvac.exceptions.VaultError as error:
        what = type(error).__name__
        raise OperatorRefused(f"{vault} refused to look up the token: {what}") from None
    except (requests.exceptions.InvalidHeader, UnicodeError, ValueError) as error:
        # A token no HTTP header can carry (a line break, a non-Latin-1 character): never sent (attack 28, F2).
        raise OperatorRefused(
            f"the token cannot be sent to Vault ({type(error).__name__}): it is not a Vault token"
        ) from None
    except requests.RequestException as error:
        raise OperatorNotLookedUp(f"cannot reach {vault}: {type(error).__name__}") from None
    identity = OperatorIdentity(
        display_name=str(data.get("display_name") or "unnamed"),
        entity_id=str(data.get("entity_id") or ""),
        accessor=str(data.get("accessor") or ""),
        policies=tuple(data.get("policies") or ()),
    )
    if not set(identity.policies) & set(allowed_policies):
        raise OperatorRefused(
            f"the Vault token of {identity.display_name} has none of the policies {', '.join(allowed_policies)}"
            " needed for administrative commands"
        )
    return identity
