"""Tokenize: one stable random token per (type, value), issued once, looked up through keyed fingerprints.

Split out of vault.py as it was (review 17, #7); `TokenVault` (vault.py) is built on it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import repeat
from typing import cast

from vault_service.domain.crypto import fingerprints, seal_many
from vault_service.domain.errors import (
    InvalidValue,
    KeysUnavailable,
    PermissionDenied,
    RateLimited,
    StorageError,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.domain.token_types import TokenType, normalize_many
from vault_service.domain.tokens import new_tokens
from vault_service.service.found_tokens import checked_tokens
from vault_service.service.keyring import KeyRing
from vault_service.service.ports import FoundToken, NewTokenRow, StaleKeys, ValuesNotStored
from vault_service.service.revealing import report_erased_present, reveal_hasher
from vault_service.service.vault_base import TokenVaultBase, caller_name

STALE_KEY_RETRIES = 3

TokenizeOutcome = str | VaultError


class Tokenizing(TokenVaultBase):
    """The Tokenize use case of `TokenVault`."""

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

        A VaultError it ends with says whether the call stored nothing (`VaultError.stored_nothing`): no insert of
        it began, or each ended before its COMMIT or was refused by the database (the token store tells:
        `insert_new`). Then a caller whose answer was lost (attack 41, A41-4) knows the values were not stored by it.
        """
        stored = _Stored()
        try:
            return self._tokenize_columns(client, columns, stored)
        except VaultError as error:
            error.stored_nothing = not stored.maybe
            raise

    def _tokenize_columns(
        self, client: Caller | str | None, columns: Sequence[tuple[TokenType | None, Sequence[str]]], stored: _Stored
    ) -> list[list[TokenizeOutcome]]:
        caller = Caller.of(client)
        count = sum(len(values) for _, values in columns)
        try:
            allowed = self._policy.permissions(caller_name(caller)).tokenize
            if not allowed:
                raise PermissionDenied(f"client {caller_name(caller)!r} may not tokenize")
            self._tokenize_limiter.take(str(caller_name(caller)), count)
        except VaultError as error:
            self._audit_refusal(caller, "tokenize", error, count, "")
            raise
        assert caller is not None  # permissions() refuses a missing identity
        epoch = self._cache.epoch  # an erasure during this call: what it finds is not cached
        merged: dict[TokenType | None, list[str]] = {}
        for token_type, values in columns:
            merged.setdefault(token_type, []).extend(values)
        by_type: dict[TokenType | None, list[TokenizeOutcome]] = {}
        issued_in_all = handled = 0
        try:
            for token_type, values in merged.items():
                by_type[token_type], issued = self._tokenize_type(caller, allowed, token_type, values, epoch, stored)
                issued_in_all += issued
                handled += len(values)
        except _NewTokensRefused:  # told by nothing the caller does not know: the call's size and its limit
            raise self._new_token_limiter.refusal_telling_only(caller.name, count) from None
        finally:
            # only the values answered (a refused call's are in its refusal's row, not the interval's "ok"
            # total: attack 23, F3), and every token issued, even by a call that then failed
            if handled or issued_in_all:
                self.meter.record(caller, handled, issued_in_all)
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
        stored: _Stored,
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
        if cache.erased_version != self.erased.version:  # erased tokens learned since: none answered from the cache
            cache.clear(self.erased.version)  # whatever the owner makes vault.erasure_count say (attack 45, A45-2)
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
        tokens, issued = self._tokens_for(caller, token_type, wanted, stored) if wanted else ([], 0)
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
        self, caller: Caller, token_type: TokenType, values: list[str], stored: _Stored
    ) -> tuple[list[TokenizeOutcome | None], int]:
        gave_up: VaultError = KeysUnavailable("data keys kept changing during this call; retry it")
        for _ in range(STALE_KEY_RETRIES):
            try:
                return self._lookup_or_issue(caller, self._keys.ring, token_type, values, stored)
            except StaleKeys:
                self._keys.refresh()  # keys rotated since our last look: write with the live ones
            except ValuesNotStored as gone:  # a winner erased since our insert met it: a fresh lookup issues anew
                gave_up = StorageError(f"{gone}, {STALE_KEY_RETRIES} times: no token handed out")
        raise gave_up

    def _lookup_or_issue(
        self, caller: Caller, ring: KeyRing, token_type: TokenType, values: list[str], stored: _Stored
    ) -> tuple[list[TokenizeOutcome | None], int]:
        """The token of each distinct normalized value, in order (issued where none was), and how many were new.

        A token found in the database is returned only once its row is seen to hold the value
        (found_tokens.py): a row that does not is DATA_LOSS for that value, and no new token.
        """
        fp_key = ring.fingerprint_key
        fps = fingerprints(fp_key, token_type, values)
        found = self._tokens.find_by_fingerprints(token_type.type_name, fps)
        if found and self.erased:  # a token erased before is never handed out, whatever its row says (attack 43)
            found = self.erased.marked_found(self._audit_hashers(), found)
        erased_present: list[str] = []
        tokens: list[TokenizeOutcome | None] = (
            checked_tokens(self._keys, token_type, values, list(map(found.get, fps)), erased_present)
            if found
            else [None] * len(fps)
        )
        if erased_present:  # an erasure undone in the database (A41-2, F2b): no token, logged, counted
            report_erased_present("tokenize", map(reveal_hasher(ring.audit_key), erased_present))
        if len(found) == len(fps):
            return tokens, 0
        missing = range(len(fps)) if not found else [j for j, token in enumerate(tokens) if token is None]
        try:
            self._new_token_limiter.take(caller.name, len(missing))
        except RateLimited as error:  # the audit row and the sweep metric count them; the caller is not told how many
            self._audit_refusal(caller, "tokenize", error, len(missing), token_type.type_name)
            self.meter.refused_new_tokens(caller, len(missing))
            raise _NewTokensRefused from error
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
        try:
            inserted = self._tokens.insert_new(list(new_rows), ring.generation)
        except (VaultError, StaleKeys) as error:  # the store says whether its transactions may have committed
            stored.maybe = stored.maybe or not error.stored_nothing
            raise
        except BaseException:
            stored.maybe = True
            raise
        stored.maybe = True
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
        if self.erased:  # a row of a token erased before, pointed at the value: never handed out (attack 43)
            theirs = self.erased.marked_found(self._audit_hashers(), theirs)
        rows = [theirs.get(fps[k]) for k in lost]
        if None in rows:
            raise ValuesNotStored(f"{rows.count(None)} new value(s) neither stored nor found in another writer's row")
        erased_present: list[str] = []
        checked = checked_tokens(self._keys, token_type, [values[k] for k in lost], rows, erased_present)
        if erased_present:
            report_erased_present("tokenize", map(reveal_hasher(self._keys.ring.audit_key), erased_present))
        for k, outcome in zip(lost, checked, strict=True):
            got[k] = outcome
        return got


class _Stored:
    """Whether an insert of one Tokenize call may have stored values (`tokenize_columns`)."""

    __slots__ = ("maybe",)

    def __init__(self) -> None:
        self.maybe = False


class _NewTokensRefused(Exception):
    """The new-token limit refused the values of a call that are not stored (audited and counted already).

    `tokenize_columns` turns it into a refusal that does not tell how many they were (attack 23, F2).
    """


def _cacheable(keys: list[bytes], found: list[TokenizeOutcome | None]) -> tuple[list[bytes], list[str]]:
    """The (cache key, token) pairs of the values that got a token, as two lists."""
    pairs = [(key, outcome) for key, outcome in zip(keys, found, strict=True) if isinstance(outcome, str)]
    return [key for key, _ in pairs], [token for _, token in pairs]
