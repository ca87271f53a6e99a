"""Tokenize and Detokenize: the vault's use cases, independent of gRPC and SQL."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from vault_service.domain.audit import AuditEvent
from vault_service.domain.crypto import SealBroken, fingerprint, open_sealed, seal
from vault_service.domain.errors import (
    InvalidRequest,
    InvalidValue,
    KeysUnavailable,
    PermissionDenied,
    TokenNotFound,
    VaultError,
)
from vault_service.domain.masking import mask
from vault_service.domain.policy import AccessPolicy, RevealLevel
from vault_service.domain.token_types import TokenType, normalize
from vault_service.domain.tokens import new_token, type_of_token
from vault_service.service.keyring import KeyRing
from vault_service.service.ports import AuditLog, NewTokenRow, StoredToken, TokenStore

log = logging.getLogger(__name__)

MAX_PURPOSE_LENGTH = 512


@dataclass(frozen=True)
class Revealed:
    """A detokenized value as the caller may see it."""

    token_type: TokenType
    value: str
    level: RevealLevel


TokenizeOutcome = str | VaultError
DetokenizeOutcome = Revealed | VaultError


class TokenVault:
    """Issues stable random tokens and reveals values to authorized clients."""

    def __init__(self, tokens: TokenStore, keyring: KeyRing, policy: AccessPolicy, audit: AuditLog) -> None:
        self._tokens = tokens
        self._keyring = keyring
        self._policy = policy
        self._audit = audit

    def tokenize(self, client: str | None, items: Sequence[tuple[TokenType | None, str]]) -> list[TokenizeOutcome]:
        """One token (or error) per (type, value), in order; equal values get equal tokens."""
        permissions = self._policy.permissions(client)
        if not permissions.tokenize:
            raise PermissionDenied(f"client {client!r} may not tokenize")
        outcomes: list[TokenizeOutcome | None] = [None] * len(items)
        wanted: dict[TokenType, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (token_type, value) in enumerate(items):
            try:
                if token_type is None:
                    raise InvalidValue("token type is required")
                self._policy.check_tokenize(client, token_type)
                wanted[token_type][normalize(token_type, value)].append(index)
            except VaultError as error:
                outcomes[index] = error
        for token_type, positions in wanted.items():
            for normalized, token in self._tokens_for(token_type, list(positions)).items():
                for index in positions[normalized]:
                    outcomes[index] = token
        missing = [i for i, o in enumerate(outcomes) if o is None]
        if missing:  # every position is filled above; this guards the invariant
            raise RuntimeError(f"tokenize left {len(missing)} item(s) without a result")
        return [o for o in outcomes if o is not None]

    def _tokens_for(self, token_type: TokenType, values: list[str]) -> dict[str, str]:
        fp_key = self._keyring.fingerprint_key
        by_fingerprint = {fingerprint(fp_key, token_type, v): v for v in values}
        found = self._tokens.find_by_fingerprints(token_type.type_name, list(by_fingerprint))
        missing = [fp for fp in by_fingerprint if fp not in found]
        if missing:
            dek = self._keyring.active_encryption_key
            rows = []
            for fp in missing:
                token = new_token(token_type)
                sealed = seal(dek, token_type, token, by_fingerprint[fp])
                rows.append(NewTokenRow(token, token_type.type_name, fp, fp_key.key_id, dek.key_id, sealed))
            found.update(self._tokens.insert_new(rows))
        return {by_fingerprint[fp]: token for fp, token in found.items()}

    def detokenize(self, client: str | None, tokens: Sequence[str], purpose: str) -> list[DetokenizeOutcome]:
        """The value behind each token as the caller's policy reveals it; every call is audited."""
        token_types = sorted({t.type_name for t in map(type_of_token, tokens) if t})
        try:
            self._check_detokenize_request(client, purpose)
        except VaultError as error:
            self._audit.append(
                AuditEvent(
                    client or "<anonymous>",
                    "detokenize",
                    f"refused: {type(error).__name__}",
                    len(tokens),
                    purpose[:MAX_PURPOSE_LENGTH],
                    ",".join(token_types),
                )
            )
            raise
        rows = self._tokens.fetch(list({t for t in tokens if type_of_token(t)}))
        outcomes = [self._reveal(client, token, rows.get(token)) for token in tokens]
        revealed = sum(isinstance(o, Revealed) for o in outcomes)
        # Written before anything is returned: no audit row, no reveal.
        self._audit.append(
            AuditEvent(
                str(client),
                "detokenize",
                f"ok: {revealed} revealed, {len(tokens) - revealed} refused",
                len(tokens),
                purpose,
                ",".join(token_types),
            )
        )
        return outcomes

    def _check_detokenize_request(self, client: str | None, purpose: str) -> None:
        if not self._policy.may_detokenize_anything(client):
            raise PermissionDenied(f"client {client!r} may not detokenize")
        if not purpose.strip():
            raise InvalidRequest("purpose is required: say why the values are needed (ticket, case id)")
        if len(purpose) > MAX_PURPOSE_LENGTH:
            raise InvalidRequest(f"purpose is longer than {MAX_PURPOSE_LENGTH} characters")

    def _reveal(self, client: str | None, token: str, row: StoredToken | None) -> DetokenizeOutcome:
        token_type = type_of_token(token)
        if token_type is None:
            return InvalidValue("not a token: expected <type prefix>_<22 characters>")
        level = self._policy.reveal_level(client, token_type)
        if level is RevealLevel.NONE:
            return PermissionDenied(f"client {client!r} may not detokenize {token_type.type_name} tokens")
        if row is None or row.sealed is None:
            return TokenNotFound("no value is stored for this token (never issued or erased)")
        try:
            value = open_sealed(self._keyring.key(row.dek_id), token_type, token, row.sealed)
        except (KeysUnavailable, SealBroken) as error:
            log.error("cannot open a stored value", extra={"dek_id": row.dek_id, "error": str(error)})
            return KeysUnavailable("the value cannot be decrypted with the keys loaded")
        shown = value if level is RevealLevel.PLAIN else mask(token_type, value)
        return Revealed(token_type, shown, level)
