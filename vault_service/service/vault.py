"""Tokenize, Detokenize and Erase: the vault's use cases, independent of gRPC and SQL.

What a reveal shows, and how values are opened, is in `revealing.py`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from itertools import compress, repeat
from typing import cast

from vault_service.domain.audit import AuditEvent
from vault_service.domain.crypto import fingerprints, seal_many
from vault_service.domain.errors import (
    InvalidValue,
    KeysUnavailable,
    PermissionDenied,
    RateLimited,
    StorageError,
    TokenNotFound,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.domain.policy import AccessPolicy, RevealLevel
from vault_service.domain.purpose import (
    WITHHELD_PURPOSE,
    PurposeHoldsOwnValue,
    check_names_no_token_of,
    check_purpose,
    shaped_as_a_stored_value,
    values_spelled_by,
)
from vault_service.domain.rate_limit import RateLimiter, exact
from vault_service.domain.token_types import TokenType, normalize_many
from vault_service.domain.tokens import new_tokens, types_of_tokens
from vault_service.service.found_tokens import checked_tokens
from vault_service.service.keyring import KeyManager, KeyRing
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog, FoundToken, NewTokenRow, StaleKeys, TokenStore, ValuesNotStored
from vault_service.service.revealing import (
    DetokenizeOutcome,
    Revealed,
    RevealedCall,
    reveal,
    reveal_hasher,
)
from vault_service.service.stored_values import StoredValueLookup
from vault_service.service.token_cache import TokenCache
from vault_service.service.withheld_purposes import WithheldPurposes, remembered_for

log = logging.getLogger(__name__)

STALE_KEY_RETRIES = 3


_TOKEN_TYPES = tuple(TokenType)  # iterating the Enum class itself runs a Python generator

TokenizeOutcome = str | VaultError
EraseOutcome = VaultError | None  # None: erased


class TokenVault:
    """Issues stable random tokens, reveals values to authorized clients, erases on request.

    Callers are `Caller`s (a verified certificate's name, serial and fingerprint); a plain name
    is accepted for in-process use. Every refusal is audited (throttled per peer); tokenize,
    reveals and erasures are rate-limited per client (limits fail closed); tokenize is audited in
    aggregate; every reveal is audited with a keyed hash of each token revealed, so who saw a
    token can be answered without storing tokens. A purpose is kept in clear only in the row of a
    call whose every value was opened and compared with it (`revealing.RevealedCall.keeps_purpose`;
    a junk string or a token never issued names no value); every other row, refusals included,
    keeps it withheld (empty).
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
        self.stored_values = StoredValueLookup(tokens, keys)
        self.withheld_purposes = WithheldPurposes(ttl=remembered_for(policy))
        # Every limit's buckets are kept in the database, shared by every replica and kept across
        # restarts (the limits themselves come from the policy file). Reveals and tokenize spend
        # leases taken from them, a twentieth of the burst at a time; erasure, which cannot be
        # undone, takes exactly what each call needs.
        defaults, shared = policy.default_limits, tokens
        self._tokenize_limiter = RateLimiter(
            policy.limits_of("tokenize"), defaults.tokenize, "tokenize", shared=shared, kind="tokenize"
        )
        self._new_token_limiter = RateLimiter(
            policy.limits_of("new_tokens"),
            defaults.new_tokens,
            "create new tokens for",
            shared=shared,
            kind="new_tokens",
        )
        self._detokenize_limiter = RateLimiter(
            policy.limits_of("detokenize"), defaults.detokenize, "detokenize", shared=shared, kind="detokenize"
        )
        self._erase_limiter = RateLimiter(
            policy.limits_of("erase"), defaults.erase, "erase", shared=shared, kind="erase", lease=exact
        )

    @property
    def cache(self) -> TokenCache:
        """The token cache (for metrics and invalidation)."""
        return self._cache

    def refuse(self, peer: str, caller: Caller | None, action: str, error: VaultError, item_count: int) -> None:
        """Audit a call refused before it reached a use case (throttled per peer).

        Raises TooManyRequests when the peer is over its refusal rate.
        """
        self.refusals.refused(peer, _refusal_event(caller, action, error, item_count, ""))

    # -- Tokenize ---------------------------------------------------------------------------

    def tokenize(
        self, client: Caller | str | None, items: Sequence[tuple[TokenType | None, str]]
    ) -> list[TokenizeOutcome]:
        """One token (or error) per (type, value), in order; equal values get equal tokens."""
        by_type: dict[TokenType | None, tuple[list[int], list[str]]] = {}
        for index, (token_type, value) in enumerate(items):
            column = by_type.get(token_type)
            if column is None:
                column = by_type[token_type] = ([], [])
            column[0].append(index)
            column[1].append(value)
        columns = self.tokenize_columns(client, [(token_type, values) for token_type, (_, values) in by_type.items()])
        outcomes: list[TokenizeOutcome | None] = [None] * len(items)
        for (positions, _), column_outcomes in zip(by_type.values(), columns, strict=True):
            for index, outcome in zip(positions, column_outcomes, strict=True):
                outcomes[index] = outcome
        if None in outcomes:  # every position is filled above; this guards the invariant
            raise RuntimeError(f"tokenize left {outcomes.count(None)} item(s) without a result")
        return cast(list[TokenizeOutcome], outcomes)

    def tokenize_columns(
        self, client: Caller | str | None, columns: Sequence[tuple[TokenType | None, Sequence[str]]]
    ) -> list[list[TokenizeOutcome]]:
        """`tokenize` of columns of values of one type each: one list of outcomes per column, in order.

        The form values arrive in from gRPC, without a (type, value) pair to build per value.
        Columns of the same type are looked up together, so equal values get equal tokens.
        """
        caller = Caller.of(client)
        count = sum(len(values) for _, values in columns)
        try:
            allowed = self._policy.permissions(_name(caller)).tokenize
            if not allowed:
                raise PermissionDenied(f"client {_name(caller)!r} may not tokenize")
            self._tokenize_limiter.take(str(_name(caller)), count)
        except VaultError as error:
            self._audit_refusal(caller, "tokenize", error, count, "")
            raise
        assert caller is not None  # permissions() refuses a missing identity
        epoch = self._cache.epoch  # an erasure during this call: what it finds is not cached
        merged: dict[TokenType | None, list[str]] = {}
        for token_type, values in columns:
            merged.setdefault(token_type, []).extend(values)
        by_type: dict[TokenType | None, list[TokenizeOutcome]] = {}
        issued_in_all = 0
        try:
            for token_type, values in merged.items():
                by_type[token_type], issued = self._tokenize_type(caller, allowed, token_type, values, epoch)
                issued_in_all += issued
        finally:
            self.meter.record(caller, count, issued_in_all)
        done = dict.fromkeys(merged, 0)
        outcomes = []
        for token_type, values in columns:
            start = done[token_type]
            done[token_type] = start + len(values)
            outcomes.append(by_type[token_type][start : start + len(values)])
        return outcomes

    def _tokenize_type(
        self,
        caller: Caller,
        allowed: Collection[TokenType],
        token_type: TokenType | None,
        values: list[str],
        epoch: int,
    ) -> tuple[list[TokenizeOutcome], int]:
        """Outcomes of values of one type, in order, and how many tokens were new.

        Batch steps throughout (cache keys, normalization, fingerprints, sealing): on a batch
        of new values the cost per value is in the hashing and encryption, not the bookkeeping.
        """
        if token_type is None:
            return [InvalidValue("token type is required") for _ in values], 0
        if token_type not in allowed:
            message = f"client {caller.name!r} may not tokenize {token_type.type_name} values"
            return [PermissionDenied(message) for _ in values], 0
        cache = self._cache
        keys = cache.keys(token_type, values)
        outcomes = cast(list[TokenizeOutcome | None], cache.get_many(keys))
        missed = outcomes.count(None)
        if not missed:
            return cast(list[TokenizeOutcome], outcomes), 0
        every_one = missed == len(values)
        misses = range(missed) if every_one else [i for i, token in enumerate(outcomes) if token is None]
        judged, all_valid = normalize_many(token_type, values if every_one else [values[i] for i in misses])
        valid = cast(list[str], judged) if all_valid else [v for v in judged if isinstance(v, str)]
        wanted = list(dict.fromkeys(valid))  # distinct, in order
        tokens, issued = self._tokens_for(caller, token_type, wanted) if wanted else ([], 0)
        if all_valid and len(wanted) == len(judged):
            found: list[TokenizeOutcome | None] = list(tokens)  # one token per miss, in order
        else:
            token_of = dict(zip(wanted, tokens, strict=True))
            found = [token_of.get(v) if isinstance(v, str) else v for v in judged]
        if every_one:
            outcomes = found
        else:
            for index, outcome in zip(misses, found, strict=True):
                outcomes[index] = outcome
        miss_keys = keys if every_one else [keys[i] for i in misses]
        cache.put_many(*_cacheable(miss_keys, found), epoch)
        if None in outcomes:  # every position is filled above; this guards the invariant
            raise RuntimeError(f"tokenize left {outcomes.count(None)} item(s) without a result")
        return cast(list[TokenizeOutcome], outcomes), issued

    def _tokens_for(
        self, caller: Caller, token_type: TokenType, values: list[str]
    ) -> tuple[list[TokenizeOutcome | None], int]:
        gave_up: VaultError = KeysUnavailable("data keys kept changing during this call; retry it")
        for _ in range(STALE_KEY_RETRIES):
            try:
                return self._lookup_or_issue(caller, self._keys.ring, token_type, values)
            except StaleKeys:
                self._keys.refresh()  # keys rotated since our last look: write with the live ones
            except ValuesNotStored as gone:  # a winner erased since our insert met it: a fresh lookup issues anew
                gave_up = StorageError(f"{gone}, {STALE_KEY_RETRIES} times: no token handed out")
        raise gave_up

    def _lookup_or_issue(
        self, caller: Caller, ring: KeyRing, token_type: TokenType, values: list[str]
    ) -> tuple[list[TokenizeOutcome | None], int]:
        """The token of each distinct normalized value, in order (issued where none was), and how many were new.

        A token found in the database is returned only once its row is seen to hold the value
        (found_tokens.py): a row that does not is DATA_LOSS for that value, and no new token.
        """
        fp_key = ring.fingerprint_key
        fps = fingerprints(fp_key, token_type, values)
        found = self._tokens.find_by_fingerprints(token_type.type_name, fps)
        tokens: list[TokenizeOutcome | None] = (
            checked_tokens(self._keys, token_type, values, list(map(found.get, fps))) if found else [None] * len(fps)
        )
        if len(found) == len(fps):
            return tokens, 0
        missing = range(len(fps)) if not found else [j for j, token in enumerate(tokens) if token is None]
        try:
            self._new_token_limiter.take(caller.name, len(missing))
        except RateLimited as error:
            self._audit_refusal(caller, "tokenize", error, len(missing), token_type.type_name)
            raise
        new_values = values if not found else [values[j] for j in missing]
        new_fps = fps if not found else [fps[j] for j in missing]
        dek, pending = ring.active_encryption_key, ring.pending_fingerprint_key
        issued = new_tokens(token_type, len(missing))
        new_rows = map(
            tuple.__new__,  # NewTokenRow._make without its length check (zip makes 7-tuples): in C
            repeat(NewTokenRow),
            zip(
                issued,
                repeat(token_type.type_name),
                new_fps,
                repeat(fp_key.key_id),
                repeat(dek.key_id),
                seal_many(dek, token_type, issued, new_values),
                fingerprints(pending, token_type, new_values) if pending else repeat(None),
            ),
        )
        inserted = self._tokens.insert_new(list(new_rows), ring.generation)
        got: list[TokenizeOutcome | None] = list(map(inserted.ours.get, new_fps))
        # Each value got the token issued for it (compared in C), or some were another writer's: check those.
        outcomes = got if got == issued else self._check_theirs(token_type, new_values, new_fps, got, inserted.theirs)
        if not found:
            return outcomes, len(missing)
        for j, outcome in zip(missing, outcomes, strict=True):
            tokens[j] = outcome
        return tokens, len(missing)

    def _check_theirs(
        self,
        token_type: TokenType,
        values: list[str],
        fps: list[bytes],
        got: list[TokenizeOutcome | None],
        theirs: dict[bytes, FoundToken],
    ) -> list[TokenizeOutcome | None]:
        """`got` with the token of each value another writer stored first, once its row is seen to hold the value.

        The insert found those values' fingerprints taken (by a concurrent writer of the same
        value, or by a row the database owner pointed there) and read their rows back as the
        lookup reads them: they are checked as found ones are. A value with neither our row nor
        another's had its winner erased between the insert and the read back (or the database
        dropped our row): ValuesNotStored, and the call looks it up again.
        """
        lost = [k for k, token in enumerate(got) if token is None]
        rows = [theirs.get(fps[k]) for k in lost]
        if None in rows:
            raise ValuesNotStored(f"{rows.count(None)} new value(s) neither stored nor found in another writer's row")
        checked = checked_tokens(self._keys, token_type, [values[k] for k in lost], rows)
        for k, outcome in zip(lost, checked, strict=True):
            got[k] = outcome
        return got

    # -- Detokenize -------------------------------------------------------------------------

    def detokenize(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[DetokenizeOutcome]:
        """The value behind each token as the caller's policy reveals it; every call is audited."""
        caller = Caller.of(client)
        types = types_of_tokens(tokens)  # parsed once per token
        present = _present(types)
        token_types = _names_of(present)
        try:
            if not self._policy.may_detokenize_anything(_name(caller)):
                raise PermissionDenied(f"client {_name(caller)!r} may not detokenize")
            check_purpose(purpose)
            check_names_no_token_of(purpose, compress(tokens, types))
            self._detokenize_limiter.take(str(_name(caller)), len(tokens))
        except VaultError as error:  # nothing opened, so nothing compared: the purpose is withheld
            self._audit_refusal(caller, "detokenize", error, len(tokens), token_types)
            raise
        assert caller is not None
        rows = self._tokens.fetch(list(set(compress(tokens, types))))  # well-formed tokens, once each
        # One policy lookup per token type in the call, not per token.
        levels = {member: self._policy.reveal_level(caller.name, member) for member in present}
        try:  # opened, then compared with the purpose, then audited, then shown
            checked = reveal(self._keys, caller.name, tokens, types, levels, rows, values_spelled_by(purpose))
        except PurposeHoldsOwnValue as error:
            # Without the purpose, never throttled, and naming the call's tokens as a reveal does:
            # the refusal told a caller who sees the value in plain that its guess was right, so
            # `audit who-saw` must list it (else a way to confirm a value without a reveal row).
            self.withheld_purposes.remember(caller.name, purpose)  # it spelled a value: later calls too
            hash_of = reveal_hasher(self._keys.ring.audit_key)
            named = tuple(hash_of(token) for token in dict.fromkeys(compress(tokens, types)))
            refusal = _refusal_event(caller, "detokenize", error, len(tokens), token_types)
            self._audit.append(replace(refusal, revealed=named))
            raise
        outcomes = checked.outcomes
        purpose = self._kept(caller.name, purpose, checked)
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

    def _audit_refusal(self, caller: Caller | None, action: str, error: VaultError, count: int, types: str) -> None:
        """Audit a refused call (throttled per peer), without its purpose: no value of it was compared."""
        self.refusals.refused(_name(caller) or "<anonymous>", _refusal_event(caller, action, error, count, types))

    # -- Erase ------------------------------------------------------------------------------

    def erase(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[EraseOutcome]:
        """Destroy the values behind `tokens` (right to erasure), in one transaction with its audit row."""
        caller = Caller.of(client)
        types = types_of_tokens(tokens)
        token_types = _names_of(_present(types))
        try:
            allowed_types = self._policy.permissions(_name(caller)).erase
            if not allowed_types:
                raise PermissionDenied(f"client {_name(caller)!r} may not erase values")
            check_purpose(purpose)
            check_names_no_token_of(purpose, compress(tokens, types))
            self._erase_limiter.take(str(_name(caller)), len(tokens))  # irreversible: metered like reveals
        except VaultError as error:  # refused before opening (the budget limits opening): purpose withheld
            self._audit_refusal(caller, "erase", error, len(tokens), token_types)
            raise
        assert caller is not None
        outcomes: list[EraseOutcome] = []
        erasable: list[str] = []
        erasable_types: list[TokenType | None] = []
        for token, token_type in zip(tokens, types, strict=True):
            if token_type is None:
                outcomes.append(InvalidValue("not a token: expected <type prefix>_<22 characters>"))
            elif token_type not in allowed_types:
                outcomes.append(PermissionDenied(f"client {caller.name!r} may not erase {token_type.type_name} values"))
            else:
                outcomes.append(None)
                erasable.append(token)
                erasable_types.append(token_type)
        compared = self._compared(caller, tokens, types, purpose)
        purpose = self._kept(caller.name, purpose, compared, by_shape=shaped_as_a_stored_value(purpose))
        # The erasure and its audit row commit together (vault.erase_tokens); the row keeps the
        # keyed hash of each token it erased, as a reveal's does, so who-saw names the erasure.
        hashes = tuple(map(reveal_hasher(self._keys.ring.audit_key), erasable))
        event = AuditEvent(
            caller.name, "erase", "", len(tokens), purpose, token_types, caller.serial, caller.cert_sha256, hashes
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

    def _compared(
        self, caller: Caller, tokens: Sequence[str], types: Sequence[TokenType | None], purpose: str
    ) -> RevealedCall:
        """An erasure's purpose compared with the values its tokens name, as a masked reveal compares it.

        Opened as `reveal` does for a masked reveal (an erasure shows nothing): a hit never refuses
        the call - refused when right, erased when wrong would confirm a guess. The tokens of a type
        the client may not erase are opened too, only for this comparison (the erase budget already
        counted them): else a made-up token of such a type would blank the purpose at will. A string
        that is not a token names no value and is left out (review 12, finding 1).
        """
        named = [token for token, token_type in zip(tokens, types, strict=True) if token_type is not None]
        if not named:
            return RevealedCall([], purpose_withheld=False)
        named_types = [token_type for token_type in types if token_type is not None]
        masked = dict.fromkeys(_present(named_types), RevealLevel.MASKED)
        rows = self._tokens.fetch(list(dict.fromkeys(named)))
        return reveal(self._keys, caller.name, named, named_types, masked, rows, values_spelled_by(purpose))

    def _kept(self, client: str, purpose: str, checked: RevealedCall, *, by_shape: bool = False) -> str:
        """The purpose as a served call's audit row keeps it: in clear, or withheld (empty).

        Kept only when every value the call's tokens name was opened and compared with it and it
        spells none of them (`RevealedCall.keeps_purpose`: one spelling a value the call reveals
        masked or erases, or naming a value that exists but was not compared - erased, or it does
        not open - is withheld; a string that is not a token and a token never issued name no
        value and withhold nothing), and it names no value stored for another call
        (`stored_values`, cached per purpose; attack 14, finding 3) - withheld, never refused: a
        refusal would tell the caller the value is stored.

        Every withhold is counted alike (`purposes_withheld`, no label) and none is logged: a log
        line or a label per cause told whoever reads the logs or the metrics whether a guess the
        purpose spelled is stored anywhere in the vault (review 15, finding 2). The row's outcome
        already counts the tokens not compared.

        A purpose withheld for spelling a value of the call or naming a stored one is remembered
        for `client` (`withheld_purposes`, in memory per replica), and the client's later call with
        the identical purpose is withheld too: an erasure split into calls, device first, kept
        `GDPR-2026-801-<device id>` in the ip call's row once the device was erased (attack 15,
        finding 4). A purpose withheld only for a value not compared is not remembered.

        `by_shape` (an Erase whose purpose holds what has the shape of a stored value,
        `shaped_as_a_stored_value`) withholds it whatever the comparison and the lookup found: the
        decision reads the text alone, so it tells nothing of what is stored, and it holds on every
        replica and after restarts, where the memory above does not (review 16, finding 2).
        """
        if not checked.purpose_compared:
            _count_withheld()
            return WITHHELD_PURPOSE
        if checked.purpose_withheld or self.stored_values.names_a_stored_value(purpose):
            self.withheld_purposes.remember(client, purpose)
        elif not by_shape and not self.withheld_purposes.withheld_before(client, purpose):
            return purpose
        _count_withheld()
        return WITHHELD_PURPOSE


_withheld = 0
_withheld_lock = threading.Lock()


def purposes_withheld() -> int:
    """How many served Detokenize and Erase calls of this process had their purpose withheld, whatever the cause."""
    return _withheld


def _count_withheld() -> None:
    global _withheld
    with _withheld_lock:
        _withheld += 1


def _cacheable(keys: list[bytes], found: list[TokenizeOutcome | None]) -> tuple[list[bytes], list[str]]:
    """The (cache key, token) pairs of the values that got a token, as two lists."""
    pairs = [(key, outcome) for key, outcome in zip(keys, found, strict=True) if isinstance(outcome, str)]
    return [key for key, _ in pairs], [token for _, token in pairs]


def _name(caller: Caller | None) -> str | None:
    return caller.name if caller is not None else None


def _refusal_event(caller: Caller | None, action: str, error: VaultError, count: int, types: str) -> AuditEvent:
    """A refusal as audited: its purpose withheld.

    A refused call opened no value (a refusal over the rate limit must not: opening is what the
    limit meters), so nothing tells whether its purpose spells one of them: a privacy officer's
    Erase refused over the erase burst with `GDPR-2026-801-<device id>` kept the device id for
    good (attack 12, finding 1). A purpose refused as unfit may hold what made it unfit.
    """
    return AuditEvent(
        caller.name if caller else "<anonymous>",
        action,
        f"refused: {type(error).__name__}",
        count,
        WITHHELD_PURPOSE,
        types,
        caller.serial if caller else "",
        caller.cert_sha256 if caller else "",
    )


def _present(types: Sequence[TokenType | None]) -> list[TokenType]:
    """The token types among `types`, found by identity in C (an Enum member hashes in Python)."""
    return [member for member in _TOKEN_TYPES if member in types]


def _names_of(present: Iterable[TokenType]) -> str:
    """Type names as the audit log keeps them: sorted, comma-separated."""
    return ",".join(sorted(member.type_name for member in present))
