"""Tokenize and Detokenize: the vault's use cases, independent of gRPC and SQL."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

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
from vault_service.domain.rate_limit import RateLimiter
from vault_service.domain.token_types import TokenType, normalize
from vault_service.domain.tokens import new_token, type_of_token
from vault_service.service.keyring import KeyManager, KeyRing
from vault_service.service.ports import AuditLog, NewTokenRow, StaleKeys, StoredToken, TokenStore
from vault_service.service.token_cache import TokenCache

log = logging.getLogger(__name__)

MAX_PURPOSE_LENGTH = 512
STALE_KEY_RETRIES = 3


class Revealed(NamedTuple):
    """A detokenized value as the caller may see it (a NamedTuple: one is built per value)."""

    token_type: TokenType
    value: str
    level: RevealLevel

    def __repr__(self) -> str:
        return f"Revealed(token_type={self.token_type.type_name}, value=<redacted>, level={self.level.name})"


TokenizeOutcome = str | VaultError
DetokenizeOutcome = Revealed | VaultError
EraseOutcome = VaultError | None  # None: erased


class TokenVault:
    """Issues stable random tokens, reveals values to authorized clients, erases on request."""

    def __init__(
        self,
        tokens: TokenStore,
        keys: KeyManager,
        policy: AccessPolicy,
        audit: AuditLog,
        cache: TokenCache | None = None,
    ) -> None:
        self._tokens = tokens
        self._keys = keys
        self._policy = policy
        self._audit = audit
        self._cache = cache if cache is not None else TokenCache(0)
        self._limiter = RateLimiter(policy.detokenize_limits())

    @property
    def cache(self) -> TokenCache:
        """The token cache (for metrics and invalidation)."""
        return self._cache

    # -- Tokenize ---------------------------------------------------------------------------

    def tokenize(self, client: str | None, items: Sequence[tuple[TokenType | None, str]]) -> list[TokenizeOutcome]:
        """One token (or error) per (type, value), in order; equal values get equal tokens."""
        allowed = self._policy.permissions(client).tokenize
        if not allowed:
            raise PermissionDenied(f"client {client!r} may not tokenize")
        outcomes: list[TokenizeOutcome | None] = [None] * len(items)
        cache_keys: dict[int, bytes] = {}
        wanted: dict[TokenType, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (token_type, value) in enumerate(items):
            if token_type is None:
                outcomes[index] = InvalidValue("token type is required")
                continue
            if token_type not in allowed:
                outcomes[index] = PermissionDenied(f"client {client!r} may not tokenize {token_type.type_name} values")
                continue
            cache_key = self._cache.key(token_type, value)
            cached = self._cache.get(cache_key)
            if cached is not None:
                outcomes[index] = cached
                continue
            try:
                wanted[token_type][normalize(token_type, value)].append(index)
                cache_keys[index] = cache_key
            except VaultError as error:
                outcomes[index] = error
        for token_type, positions in wanted.items():
            for normalized, token in self._tokens_for(token_type, list(positions)).items():
                for index in positions[normalized]:
                    outcomes[index] = token
                    self._cache.put(cache_keys[index], token)
        missing = [i for i, o in enumerate(outcomes) if o is None]
        if missing:  # every position is filled above; this guards the invariant
            raise RuntimeError(f"tokenize left {len(missing)} item(s) without a result")
        return [o for o in outcomes if o is not None]

    def _tokens_for(self, token_type: TokenType, values: list[str]) -> dict[str, str]:
        for _ in range(STALE_KEY_RETRIES):
            try:
                return self._lookup_or_issue(self._keys.ring, token_type, values)
            except StaleKeys:
                self._keys.refresh()  # keys rotated since our last look: write with the live ones
        raise KeysUnavailable("data keys kept changing during this call; retry it")

    def _lookup_or_issue(self, ring: KeyRing, token_type: TokenType, values: list[str]) -> dict[str, str]:
        fp_key = ring.fingerprint_key
        by_fingerprint = {fingerprint(fp_key, token_type, v): v for v in values}
        found = self._tokens.find_by_fingerprints(token_type.type_name, list(by_fingerprint))
        missing = [fp for fp in by_fingerprint if fp not in found]
        if missing:
            dek, pending = ring.active_encryption_key, ring.pending_fingerprint_key
            rows = []
            for fp in missing:
                value, token = by_fingerprint[fp], new_token(token_type)
                rows.append(
                    NewTokenRow(
                        token,
                        token_type.type_name,
                        fp,
                        fp_key.key_id,
                        dek.key_id,
                        seal(dek, token_type, token, value),
                        fingerprint(pending, token_type, value) if pending else None,
                    )
                )
            found.update(self._tokens.insert_new(rows, ring.generation))
        return {by_fingerprint[fp]: token for fp, token in found.items()}

    # -- Detokenize -------------------------------------------------------------------------

    def detokenize(self, client: str | None, tokens: Sequence[str], purpose: str) -> list[DetokenizeOutcome]:
        """The value behind each token as the caller's policy reveals it; every call is audited."""
        types = [type_of_token(t) for t in tokens]  # parsed once per token
        token_types = _names_of(types)
        try:
            self._check_detokenize_request(client, purpose)
            self._limiter.take(str(client), len(tokens))
        except VaultError as error:
            self._audit_refusal(client, "detokenize", error, tokens, purpose, token_types)
            raise
        rows = self._tokens.fetch(list({t for t, token_type in zip(tokens, types, strict=True) if token_type}))
        # One policy lookup per token type in the call, not per token.
        levels: dict[TokenType | None, RevealLevel] = {
            t: self._policy.reveal_level(client, t) for t in set(types) if t is not None
        }
        outcomes = [
            self._reveal(client, token, token_type, levels.get(token_type, RevealLevel.NONE), rows.get(token))
            for token, token_type in zip(tokens, types, strict=True)
        ]
        revealed = sum(isinstance(o, Revealed) for o in outcomes)
        # Written before anything is returned: no audit row, no reveal.
        self._audit.append(
            AuditEvent(
                str(client),
                "detokenize",
                f"ok: {revealed} revealed, {len(tokens) - revealed} refused",
                len(tokens),
                purpose,
                token_types,
            )
        )
        return outcomes

    def _check_detokenize_request(self, client: str | None, purpose: str) -> None:
        if not self._policy.may_detokenize_anything(client):
            raise PermissionDenied(f"client {client!r} may not detokenize")
        _check_purpose(purpose)

    def _audit_refusal(
        self, client: str | None, action: str, error: VaultError, tokens: Sequence[str], purpose: str, types: str
    ) -> None:
        self._audit.append(
            AuditEvent(
                client or "<anonymous>",
                action,
                f"refused: {type(error).__name__}",
                len(tokens),
                _printable(purpose[:MAX_PURPOSE_LENGTH]),
                types,
            )
        )

    def _reveal(
        self,
        client: str | None,
        token: str,
        token_type: TokenType | None,
        level: RevealLevel,
        row: StoredToken | None,
    ) -> DetokenizeOutcome:
        if token_type is None:
            return InvalidValue("not a token: expected <type prefix>_<22 characters>")
        if level is RevealLevel.NONE:
            return PermissionDenied(f"client {client!r} may not detokenize {token_type.type_name} tokens")
        if row is None or row.sealed is None:
            return TokenNotFound("no value is stored for this token (never issued or erased)")
        try:
            value = open_sealed(self._keys.key(row.dek_id), token_type, token, row.sealed)
        except (KeysUnavailable, SealBroken) as error:
            log.error("cannot open a stored value", extra={"dek_id": row.dek_id, "error": str(error)})
            return KeysUnavailable("the value cannot be decrypted with the keys loaded; retry later")
        shown = value if level is RevealLevel.PLAIN else mask(token_type, value)
        return Revealed(token_type, shown, level)

    # -- Erase ------------------------------------------------------------------------------

    def erase(self, client: str | None, tokens: Sequence[str], purpose: str) -> list[EraseOutcome]:
        """Destroy the values behind `tokens` (right to erasure). Audited before and after."""
        token_types = _type_names(tokens)
        try:
            allowed_types = self._policy.permissions(client).erase
            if not allowed_types:
                raise PermissionDenied(f"client {client!r} may not erase values")
            _check_purpose(purpose)
        except VaultError as error:
            self._audit_refusal(client, "erase", error, tokens, purpose, token_types)
            raise
        outcomes: list[EraseOutcome] = []
        erasable: list[str] = []
        for token in tokens:
            token_type = type_of_token(token)
            if token_type is None:
                outcomes.append(InvalidValue("not a token: expected <type prefix>_<22 characters>"))
            elif token_type not in allowed_types:
                outcomes.append(PermissionDenied(f"client {client!r} may not erase {token_type.type_name} values"))
            else:
                outcomes.append(None)
                erasable.append(token)
        # The intent is on record before anything is destroyed.
        self._audit.append(
            AuditEvent(str(client), "erase", f"authorized: {len(erasable)}", len(tokens), purpose, token_types)
        )
        erased = self._tokens.erase(erasable)
        self._cache.clear()
        self._audit.append(
            AuditEvent(
                str(client),
                "erase",
                f"ok: {len(erased)} erased, {len(tokens) - len(erased)} not erased",
                len(tokens),
                purpose,
                token_types,
            )
        )
        return [
            TokenNotFound("no value is stored for this token (never issued or already erased)")
            if outcome is None and token not in erased
            else outcome
            for token, outcome in zip(tokens, outcomes, strict=True)
        ]


def _type_names(tokens: Sequence[str]) -> str:
    return _names_of(map(type_of_token, tokens))


def _names_of(types: Iterable[TokenType | None]) -> str:
    return ",".join(sorted({t.type_name for t in types if t}))


def _printable(text: str) -> str:
    """`text` with every non-printable character (NUL, newline, other controls) as U+FFFD."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text)


def _check_purpose(purpose: str) -> None:
    if not purpose.strip():
        raise InvalidRequest("purpose is required: say why (ticket, case or request id)")
    if not purpose.isprintable():
        raise InvalidRequest("purpose must be printable text: no control characters or line breaks")
    if len(purpose) > MAX_PURPOSE_LENGTH:
        raise InvalidRequest(f"purpose is longer than {MAX_PURPOSE_LENGTH} characters")
