"""Tokenize and Detokenize: the vault's use cases, independent of gRPC and SQL."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import compress, repeat
from typing import NamedTuple, cast

from vault_service.domain.audit import REVEAL_HASH_BYTES, AuditEvent
from vault_service.domain.crypto import DataKey, fingerprint, open_sealed_many, seal
from vault_service.domain.errors import (
    InvalidRequest,
    InvalidValue,
    KeysUnavailable,
    PermissionDenied,
    RateLimited,
    TokenNotFound,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.domain.masking import mask
from vault_service.domain.policy import AccessPolicy, RevealLevel
from vault_service.domain.purpose import check_purpose
from vault_service.domain.rate_limit import RateLimiter
from vault_service.domain.token_types import TokenType, normalize
from vault_service.domain.tokens import new_tokens, type_of_token, types_of_tokens
from vault_service.service.keyring import KeyManager, KeyRing
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog, NewTokenRow, StaleKeys, StoredToken, TokenStore
from vault_service.service.token_cache import TokenCache

log = logging.getLogger(__name__)

STALE_KEY_RETRIES = 3


class Revealed(NamedTuple):
    """A detokenized value as the caller may see it (a NamedTuple: one is built per value)."""

    token_type: TokenType
    value: str
    level: RevealLevel

    def __repr__(self) -> str:
        return f"Revealed(token_type={self.token_type.type_name}, value=<redacted>, level={self.level.name})"


_new_revealed = cast(Callable[[type[Revealed], tuple[object, ...]], Revealed], tuple.__new__)
"""Revealed(*fields) without the Python frame of a NamedTuple's __new__ (one is made per value)."""

TokenizeOutcome = str | VaultError
DetokenizeOutcome = Revealed | VaultError
EraseOutcome = VaultError | None  # None: erased


class TokenVault:
    """Issues stable random tokens, reveals values to authorized clients, erases on request.

    Callers are `Caller`s (a verified certificate's name, serial and fingerprint); a plain name
    is accepted for in-process use. Every refusal is audited (throttled per peer); tokenize is
    metered per client and audited in aggregate; every reveal is audited with a keyed hash of
    each token revealed, so who saw a token can be answered without storing tokens.
    """

    def __init__(
        self,
        tokens: TokenStore,
        keys: KeyManager,
        policy: AccessPolicy,
        audit: AuditLog,
        cache: TokenCache | None = None,
        meter: TokenizeMeter | None = None,
    ) -> None:
        self._tokens = tokens
        self._keys = keys
        self._policy = policy
        self._audit = audit
        self._cache = cache if cache is not None else TokenCache(0)
        self.meter = meter if meter is not None else TokenizeMeter()
        self.refusals = RefusalAuditor(audit)
        defaults = policy.default_limits
        self._tokenize_limiter = RateLimiter(policy.limits_of("tokenize"), defaults.tokenize, "tokenize")
        self._new_token_limiter = RateLimiter(
            policy.limits_of("new_tokens"), defaults.new_tokens, "create new tokens for"
        )
        self._detokenize_limiter = RateLimiter(policy.limits_of("detokenize"), defaults.detokenize, "detokenize")

    @property
    def cache(self) -> TokenCache:
        """The token cache (for metrics and invalidation)."""
        return self._cache

    def refuse(self, peer: str, caller: Caller | None, action: str, error: VaultError, item_count: int) -> None:
        """Audit a call refused before it reached a use case (throttled per peer).

        Raises TooManyRequests when the peer is over its refusal rate.
        """
        self.refusals.refused(peer, _refusal_event(caller, action, error, item_count, "", ""))

    # -- Tokenize ---------------------------------------------------------------------------

    def tokenize(
        self, client: Caller | str | None, items: Sequence[tuple[TokenType | None, str]]
    ) -> list[TokenizeOutcome]:
        """One token (or error) per (type, value), in order; equal values get equal tokens."""
        caller = Caller.of(client)
        try:
            allowed = self._policy.permissions(_name(caller)).tokenize
            if not allowed:
                raise PermissionDenied(f"client {_name(caller)!r} may not tokenize")
            self._tokenize_limiter.take(str(_name(caller)), len(items))
        except VaultError as error:
            self._audit_refusal(caller, "tokenize", error, len(items), "", "")
            raise
        assert caller is not None  # permissions() refuses a missing identity
        outcomes: list[TokenizeOutcome | None] = [None] * len(items)
        epoch = self._cache.epoch  # an erasure during this call: what it finds is not cached
        cache_keys: dict[int, bytes] = {}
        wanted: dict[TokenType, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (token_type, value) in enumerate(items):
            if token_type is None:
                outcomes[index] = InvalidValue("token type is required")
                continue
            if token_type not in allowed:
                outcomes[index] = PermissionDenied(
                    f"client {caller.name!r} may not tokenize {token_type.type_name} values"
                )
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
        new_tokens = 0
        try:
            for token_type, positions in wanted.items():
                tokens, issued = self._tokens_for(caller, token_type, list(positions))
                new_tokens += issued
                for normalized, token in tokens.items():
                    for index in positions[normalized]:
                        outcomes[index] = token
                        self._cache.put(cache_keys[index], token, epoch)
        finally:
            self.meter.record(caller, len(items), new_tokens)
        missing = [i for i, o in enumerate(outcomes) if o is None]
        if missing:  # every position is filled above; this guards the invariant
            raise RuntimeError(f"tokenize left {len(missing)} item(s) without a result")
        return [o for o in outcomes if o is not None]

    def _tokens_for(self, caller: Caller, token_type: TokenType, values: list[str]) -> tuple[dict[str, str], int]:
        for _ in range(STALE_KEY_RETRIES):
            try:
                return self._lookup_or_issue(caller, self._keys.ring, token_type, values)
            except StaleKeys:
                self._keys.refresh()  # keys rotated since our last look: write with the live ones
        raise KeysUnavailable("data keys kept changing during this call; retry it")

    def _lookup_or_issue(
        self, caller: Caller, ring: KeyRing, token_type: TokenType, values: list[str]
    ) -> tuple[dict[str, str], int]:
        fp_key = ring.fingerprint_key
        by_fingerprint = {fingerprint(fp_key, token_type, v): v for v in values}
        found = self._tokens.find_by_fingerprints(token_type.type_name, list(by_fingerprint))
        missing = [fp for fp in by_fingerprint if fp not in found]
        if missing:
            try:
                self._new_token_limiter.take(caller.name, len(missing))
            except RateLimited as error:
                self._audit_refusal(caller, "tokenize", error, len(missing), "", token_type.type_name)
                raise
            dek, pending = ring.active_encryption_key, ring.pending_fingerprint_key
            rows = []
            for fp, token in zip(missing, new_tokens(token_type, len(missing)), strict=True):
                value = by_fingerprint[fp]
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
        return {by_fingerprint[fp]: token for fp, token in found.items()}, len(missing)

    # -- Detokenize -------------------------------------------------------------------------

    def detokenize(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[DetokenizeOutcome]:
        """The value behind each token as the caller's policy reveals it; every call is audited."""
        caller = Caller.of(client)
        types = types_of_tokens(tokens)  # parsed once per token
        # The types present, found by identity in C (an Enum member hashes in Python).
        present = [member for member in TokenType if member in types]
        token_types = ",".join(sorted(member.type_name for member in present))
        try:
            if not self._policy.may_detokenize_anything(_name(caller)):
                raise PermissionDenied(f"client {_name(caller)!r} may not detokenize")
            check_purpose(purpose)
            self._detokenize_limiter.take(str(_name(caller)), len(tokens))
        except VaultError as error:
            self._audit_refusal(caller, "detokenize", error, len(tokens), purpose, token_types)
            raise
        assert caller is not None
        rows = self._tokens.fetch(list(set(compress(tokens, types))))  # well-formed tokens, once each
        # One policy lookup per token type in the call, not per token.
        levels = {member: self._policy.reveal_level(caller.name, member) for member in present}
        outcomes = self._reveal(caller.name, tokens, types, levels, rows)
        hash_of = reveal_hasher(self._keys.ring.audit_key)
        if list(map(type, outcomes)).count(Revealed) == len(outcomes):
            revealed = list(map(hash_of, tokens))
        else:
            revealed = [hash_of(token) for token, o in zip(tokens, outcomes, strict=True) if type(o) is Revealed]
        # Written before anything is returned: no audit row, no reveal.
        self._audit.append(
            AuditEvent(
                caller.name,
                "detokenize",
                f"ok: {len(revealed)} revealed, {len(tokens) - len(revealed)} refused",
                len(tokens),
                purpose,
                token_types,
                caller.serial,
                caller.cert_sha256,
                tuple(revealed),
            )
        )
        return outcomes

    def _audit_refusal(
        self, caller: Caller | None, action: str, error: VaultError, count: int, purpose: str, types: str
    ) -> None:
        self.refusals.refused(
            _name(caller) or "<anonymous>", _refusal_event(caller, action, error, count, purpose, types)
        )

    def _reveal(
        self,
        client: str,
        tokens: Sequence[str],
        types: Sequence[TokenType | None],
        levels: dict[TokenType, RevealLevel],
        rows: Mapping[str, StoredToken],
    ) -> list[DetokenizeOutcome]:
        """Each token's outcome, in order; the values are opened in groups of one data key and type.

        Per token this is one pass that sorts it into its group (or decides its error) and one
        decrypt; the Revealed tuples of a group are made in C.
        """
        outcomes: list[DetokenizeOutcome | None] = [None] * len(tokens)
        by_id = {id(token_type): (token_type, level) for token_type, level in levels.items()}
        groups: dict[tuple[int, int], tuple[list[int], list[str], list[bytes]]] = {}
        none = RevealLevel.NONE
        position = -1
        for token, token_type, row in zip(tokens, types, map(rows.get, tokens), strict=True):
            position += 1
            if token_type is None:
                outcomes[position] = InvalidValue("not a token: expected <type prefix>_<22 characters>")
            elif by_id[id(token_type)][1] is none:
                outcomes[position] = PermissionDenied(
                    f"client {client!r} may not detokenize {token_type.type_name} tokens"
                )
            elif row is None or row.sealed is None:
                outcomes[position] = TokenNotFound("no value is stored for this token (never issued or erased)")
            else:
                group = groups.get((row.dek_id, id(token_type)))
                if group is None:
                    group = groups[(row.dek_id, id(token_type))] = ([], [], [])
                group[0].append(position)
                group[1].append(token)
                group[2].append(row.sealed)
        for (dek_id, type_id), (positions, group_tokens, sealed) in groups.items():
            token_type, level = by_id[type_id]
            values, failure = self._open(dek_id, token_type, group_tokens, sealed)
            if level is not RevealLevel.PLAIN:
                values = [mask(token_type, v) if v is not None else None for v in values]
            made: list[DetokenizeOutcome] = list(
                map(_new_revealed, repeat(Revealed), zip(repeat(token_type), values, repeat(level)))
            )
            if values.count(None):
                log.error("cannot open a stored value", extra={"dek_id": dek_id, "error": failure})
                for index, value in enumerate(values):
                    if value is None:
                        made[index] = KeysUnavailable("the value cannot be decrypted with the keys loaded; retry later")
            if len(made) == len(outcomes):
                return made  # one group holds every token, in order
            for position, outcome in zip(positions, made, strict=True):
                outcomes[position] = outcome
        return outcomes  # type: ignore[return-value]  # every position is set above

    def _open(
        self, dek_id: int, token_type: TokenType, tokens: list[str], sealed: list[bytes]
    ) -> tuple[list[str | None], str]:
        """The opened values (None where one does not open), and what to log about those."""
        try:
            key = self._keys.key(dek_id)
        except KeysUnavailable as error:
            return [None] * len(tokens), str(error)
        failure = f"ciphertext of a {token_type.type_name} token failed authentication"
        return open_sealed_many(key, token_type, tokens, sealed), failure

    # -- Erase ------------------------------------------------------------------------------

    def erase(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[EraseOutcome]:
        """Destroy the values behind `tokens` (right to erasure), in one transaction with its audit row."""
        caller = Caller.of(client)
        token_types = _type_names(tokens)
        try:
            allowed_types = self._policy.permissions(_name(caller)).erase
            if not allowed_types:
                raise PermissionDenied(f"client {_name(caller)!r} may not erase values")
            check_purpose(purpose)
        except VaultError as error:
            self._audit_refusal(caller, "erase", error, len(tokens), purpose, token_types)
            raise
        assert caller is not None
        outcomes: list[EraseOutcome] = []
        erasable: list[str] = []
        for token in tokens:
            token_type = type_of_token(token)
            if token_type is None:
                outcomes.append(InvalidValue("not a token: expected <type prefix>_<22 characters>"))
            elif token_type not in allowed_types:
                outcomes.append(PermissionDenied(f"client {caller.name!r} may not erase {token_type.type_name} values"))
            else:
                outcomes.append(None)
                erasable.append(token)
        # The erasure and its audit row commit together (vault.erase_tokens).
        event = AuditEvent(
            caller.name, "erase", "", len(tokens), purpose, token_types, caller.serial, caller.cert_sha256
        )
        erased = self._tokens.erase(erasable, event) if erasable else set()
        if not erasable:
            self._audit.append(replace(event, outcome="ok: 0 erased"))
        self._cache.clear()
        return [
            TokenNotFound("no value is stored for this token (never issued or already erased)")
            if outcome is None and token not in erased
            else outcome
            for token, outcome in zip(tokens, outcomes, strict=True)
        ]


def reveal_hasher(key: DataKey) -> Callable[[str], bytes]:
    """The keyed hash of revealed tokens kept in the audit log (never the tokens themselves).

    BLAKE2b in its keyed (MAC) mode, 16 bytes; the keyed state is made once per call and copied
    per token, which costs a fraction of an HMAC-SHA256 per token.
    """
    keyed = hashlib.blake2b(key=key.material[:64], digest_size=REVEAL_HASH_BYTES, person=b"tv-audit-reveal")

    def hash_of(token: str) -> bytes:
        state = keyed.copy()
        state.update(token.encode())
        return state.digest()

    return hash_of


def reveal_hash(key: DataKey, token: str) -> bytes:
    """The keyed hash of one revealed token (see `reveal_hasher`)."""
    return reveal_hasher(key)(token)


def _name(caller: Caller | None) -> str | None:
    return caller.name if caller is not None else None


def _refusal_event(
    caller: Caller | None, action: str, error: VaultError, count: int, purpose: str, types: str
) -> AuditEvent:
    """A refusal as audited.

    The purpose is kept only when it is fit to keep (a case reference): a call may be refused
    for another reason before its purpose was checked.
    """
    kept_purpose = purpose if _fit_purpose(purpose) else ""
    return AuditEvent(
        caller.name if caller else "<anonymous>",
        action,
        f"refused: {type(error).__name__}",
        count,
        kept_purpose,
        types,
        caller.serial if caller else "",
        caller.cert_sha256 if caller else "",
    )


def _type_names(tokens: Sequence[str]) -> str:
    return _names_of(map(type_of_token, tokens))


def _names_of(types: Iterable[TokenType | None]) -> str:
    return ",".join(sorted({t.type_name for t in types if t}))


def _fit_purpose(purpose: str) -> bool:
    try:
        check_purpose(purpose)
    except InvalidRequest:
        return False
    return True
