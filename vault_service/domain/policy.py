"""Who may do what: per client identity (certificate CN), per token type.

Policy file (TOML):

    [clients.etl-service]
    tokenize = ["ip", "device_id"]

    [clients.analyst.detokenize]
    ip = "plain"
    device_id = "masked"

    [clients.analyst.limits]        # optional: values revealed per second, and the burst
    detokenize_per_second = 100
    detokenize_burst = 1000

    [clients.privacy-officer]       # may erase values (GDPR) by token
    erase = ["ip", "device_id"]

A client absent from the file may do nothing. Reveal levels: `plain`, `masked`, `none`.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault_service.domain.errors import InvalidValue, PermissionDenied, Unauthenticated
from vault_service.domain.rate_limit import RateLimit
from vault_service.domain.token_types import TokenType


class RevealLevel(enum.Enum):
    """How much of a value a client may see."""

    NONE = "none"
    MASKED = "masked"
    PLAIN = "plain"


@dataclass(frozen=True)
class ClientPermissions:
    """What one client may do."""

    tokenize: frozenset[TokenType] = frozenset()
    detokenize: Mapping[TokenType, RevealLevel] = field(default_factory=dict)
    erase: frozenset[TokenType] = frozenset()
    detokenize_limit: RateLimit | None = None


@dataclass(frozen=True)
class AccessPolicy:
    """The whole policy: client name -> permissions."""

    clients: Mapping[str, ClientPermissions]

    def permissions(self, client: str | None) -> ClientPermissions:
        """The permissions of `client`; Unauthenticated when there is no identity or it is unknown."""
        if not client:
            raise Unauthenticated("no client identity: connect with a client certificate issued by the vault CA")
        found = self.clients.get(client)
        if found is None:
            raise Unauthenticated(f"client {client!r} is unknown to the vault policy; ask the vault owners to add it")
        return found

    def detokenize_limits(self) -> dict[str, RateLimit]:
        """Client -> Detokenize rate limit, for the clients that have one."""
        return {name: p.detokenize_limit for name, p in self.clients.items() if p.detokenize_limit}

    def check_tokenize(self, client: str | None, token_type: TokenType) -> None:
        """Raise unless `client` may tokenize values of `token_type`."""
        if token_type not in self.permissions(client).tokenize:
            raise PermissionDenied(f"client {client!r} may not tokenize {token_type.type_name} values")

    def reveal_level(self, client: str | None, token_type: TokenType) -> RevealLevel:
        """How `client` may see values of `token_type` (NONE when not at all)."""
        return self.permissions(client).detokenize.get(token_type, RevealLevel.NONE)

    def may_detokenize_anything(self, client: str | None) -> bool:
        """Whether any type is revealed to `client` at all."""
        levels = self.permissions(client).detokenize.values()
        return any(level is not RevealLevel.NONE for level in levels)


def _parse_client(name: str, raw: Mapping[str, Any]) -> ClientPermissions:
    unknown = set(raw) - {"tokenize", "detokenize", "erase", "limits"}
    if unknown:
        raise InvalidValue(f"policy for {name!r} has unknown keys: {', '.join(sorted(unknown))}")
    tokenize = frozenset(TokenType.from_name(t) for t in raw.get("tokenize", []))
    erase = frozenset(TokenType.from_name(t) for t in raw.get("erase", []))
    detokenize = {}
    for type_name, level in raw.get("detokenize", {}).items():
        try:
            detokenize[TokenType.from_name(type_name)] = RevealLevel(level)
        except ValueError:
            raise InvalidValue(
                f"policy for {name!r}: reveal level {level!r} is not one of plain, masked, none"
            ) from None
    return ClientPermissions(tokenize, detokenize, erase, _parse_limit(name, raw.get("limits", {})))


def _parse_limit(name: str, raw: Mapping[str, Any]) -> RateLimit | None:
    unknown = set(raw) - {"detokenize_per_second", "detokenize_burst"}
    if unknown:
        raise InvalidValue(f"policy limits for {name!r} have unknown keys: {', '.join(sorted(unknown))}")
    if "detokenize_per_second" not in raw:
        return None
    per_second = raw["detokenize_per_second"]
    try:
        return RateLimit(float(per_second), int(raw.get("detokenize_burst", max(1, int(per_second)))))
    except (TypeError, ValueError):
        raise InvalidValue(
            f"policy limits for {name!r}: detokenize_per_second must be > 0 and detokenize_burst >= 1"
        ) from None


def parse_policy(document: Mapping[str, Any]) -> AccessPolicy:
    """Build a policy from a parsed TOML document; InvalidValue with the reason if malformed."""
    clients = document.get("clients")
    if not isinstance(clients, Mapping):
        raise InvalidValue("policy must have a [clients.<name>] table per client")
    return AccessPolicy({name: _parse_client(name, raw) for name, raw in clients.items()})


def load_policy(path: Path) -> AccessPolicy:
    """Read and validate a policy file."""
    with path.open("rb") as handle:
        return parse_policy(tomllib.load(handle))
