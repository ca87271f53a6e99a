"""Erase: the values behind tokens destroyed on request (right to erasure), in one transaction with its audit row.

Split out of vault.py (review 51, R51-9), as tokenizing.py is; `TokenVault` (vault.py) is built on it. An erasure:
checks its caller (and takes its budget) -> sorts its tokens into erasable or refused -> compares its purpose with
their values -> erases -> and on a VaultError gives the budget back if nothing was erased (chaos 50, V50-4).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import replace
from itertools import compress

from tokenvault_common.erase_outcomes import ERASED_BEFORE, NEVER_ISSUED
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import InvalidValue, PermissionDenied, StoredValueAltered, TokenNotFound, VaultError
from vault_service.domain.identity import Caller
from vault_service.domain.policy import RevealLevel
from vault_service.domain.purpose import (
    check_names_no_token_of,
    check_purpose,
    shaped_as_a_stored_value,
    values_spelled_by,
)
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import types_of_tokens
from vault_service.service.ports import StoredToken
from vault_service.service.revealing import RevealedCall, report_erased_present, reveal, reveal_hasher
from vault_service.service.vault_base import TokenVaultBase, caller_name, present_types, type_names

log = logging.getLogger(__name__)

EraseOutcome = VaultError | None  # None: erased


class Erasing(TokenVaultBase):
    """The Erase use case of `TokenVault`."""

    def erase(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[EraseOutcome]:
        """Destroy the values behind `tokens` (right to erasure), in one transaction with its audit row."""
        caller = Caller.of(client)
        types = types_of_tokens(tokens)
        token_types = type_names(present_types(types))
        allowed = self._erase_allowed(caller, tokens, types, purpose, token_types)
        assert caller is not None
        try:  # before the erase: whatever fails, nothing was erased
            outcomes, erasable = _classified(caller, allowed, tokens, types)
            issued = self._issued(tokens, types)
            event = self._erase_event(caller, tokens, types, purpose, issued, erasable, token_types)
        except VaultError:
            self._give_back_erase_budget(caller.name, len(tokens))
            raise
        try:  # from here a failure may come after the COMMIT: the store says if it erased nothing (`erased_nothing`)
            erased = self._erased(caller, erasable, event, len(tokens), token_types)
        except VaultError as error:
            if not erasable or error.erased_nothing:  # nothing erased: the budget back, for the retry (V50-4)
                self._give_back_erase_budget(caller.name, len(tokens))
            raise
        # NOT_FOUND says which: erased before (the token's row is kept, its value cleared) or never issued - the
        # officer's run of tokens `dead-letters erase` named counts only the first as done (attack 39, P2).
        return [
            TokenNotFound(ERASED_BEFORE if token in issued else NEVER_ISSUED)
            if outcome is None and token not in erased
            else outcome
            for token, outcome in zip(tokens, outcomes, strict=True)
        ]

    def _erase_allowed(
        self,
        caller: Caller | None,
        tokens: Sequence[str],
        types: Sequence[TokenType | None],
        purpose: str,
        token_types: str,
    ) -> Collection[TokenType]:
        """The token types `caller` may erase, once the call passed its checks and took its budget; refusals audited."""
        try:
            allowed_types = self._policy.permissions(caller_name(caller)).erase
            if not allowed_types:
                raise PermissionDenied(f"client {caller_name(caller)!r} may not erase values")
            check_purpose(purpose)
            check_names_no_token_of(purpose, compress(tokens, types))
            self._erase_limiter.take(str(caller_name(caller)), len(tokens))  # irreversible: metered like reveals
        except VaultError as error:  # refused before opening (the budget limits opening): purpose withheld
            self._audit_refusal(caller, "erase", error, len(tokens), token_types)
            raise
        return allowed_types

    def _erase_event(
        self,
        caller: Caller,
        tokens: Sequence[str],
        types: Sequence[TokenType | None],
        purpose: str,
        issued: dict[str, StoredToken],
        erasable: Sequence[str],
        token_types: str,
    ) -> AuditEvent:
        """The erasure's audit row, its purpose compared with the values its tokens name (`_compared`, `_kept`).

        The erasure and its audit row commit together (vault.erase_tokens); the row keeps the keyed hash of each
        token it erases, as a reveal's does, so who-saw names the erasure.
        """
        compared = self._compared(caller, tokens, types, purpose, issued)
        hash_of = reveal_hasher(self._keys.ring.audit_key)
        if compared.erased_present:  # an erasure undone in the database (A41-2): this erasure clears it again
            report_erased_present("erase", map(hash_of, compared.erased_present))
        purpose = self._kept(caller.name, purpose, compared, by_shape=shaped_as_a_stored_value(purpose))
        hashes = tuple(map(hash_of, erasable))
        return AuditEvent(
            caller.name, "erase", "", len(tokens), purpose, token_types, caller.serial, caller.cert_sha256, hashes
        )

    def _erased(
        self, caller: Caller, erasable: Sequence[str], event: AuditEvent, count: int, token_types: str
    ) -> set[str]:
        """Erase `erasable` with `event` as its audit row: the tokens erased (those erased before are not)."""
        try:
            erased = self._tokens.erase(erasable, event) if erasable else set()
        except StoredValueAltered as error:  # read back not erased: rolled back with its row (attack 41, A41-3)
            self._audit_refusal(caller, "erase", error, count, token_types)
            raise
        if not erasable:
            self._audit.append(replace(event, outcome="ok: 0 erased"))
        # Known as erased from now on, whatever the owner makes its row say (attack 43, A43-3/4/5).
        self.erased.add(h for token, h in zip(erasable, event.revealed, strict=True) if token in erased)
        self._cache.clear(self.erased.version)  # the set's version included: Tokenize need not clear it again
        return erased

    def _give_back_erase_budget(self, client: str, count: int) -> None:
        """Give an erasure that erased nothing its budget back (V50-4), if the database lets it: logged if not.

        The erasure's own error is what its caller is told ("nothing was erased; retry later"): a give-back the
        database refused as well (unreachable, the budget row held past its wait) replaced it with its own, and
        the officer was told of a budget row instead (review 51, R51-2). The budget then stays spent.
        """
        try:
            self._erase_limiter.give_back(client, count)
        except VaultError as failed:
            log.warning("an erasure that erased nothing could not give its budget back (%s)", type(failed).__name__)

    def _issued(self, tokens: Sequence[str], types: Sequence[TokenType | None]) -> dict[str, StoredToken]:
        """The rows of `tokens` the vault issued (erased ones too: their row stays, `sealed` None); one fetch."""
        named = [token for token, token_type in zip(tokens, types, strict=True) if token_type is not None]
        return self._tokens.fetch(list(dict.fromkeys(named))) if named else {}

    def _compared(
        self,
        caller: Caller,
        tokens: Sequence[str],
        types: Sequence[TokenType | None],
        purpose: str,
        issued: dict[str, StoredToken],
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
        masked = dict.fromkeys(present_types(named_types), RevealLevel.MASKED)
        return reveal(self._keys, caller.name, named, named_types, masked, issued, values_spelled_by(purpose))


def _classified(
    caller: Caller, allowed: Collection[TokenType], tokens: Sequence[str], types: Sequence[TokenType | None]
) -> tuple[list[EraseOutcome], list[str]]:
    """Each token's outcome as far as it is known before the erase (None: to erase), and the tokens to erase."""
    outcomes: list[EraseOutcome] = []
    erasable: list[str] = []
    for token, token_type in zip(tokens, types, strict=True):
        if token_type is None:
            outcomes.append(InvalidValue("not a token: expected <type prefix>_<22 characters>"))
        elif token_type not in allowed:
            outcomes.append(PermissionDenied(f"client {caller.name!r} may not erase {token_type.type_name} values"))
        else:
            outcomes.append(None)
            erasable.append(token)
    return outcomes, erasable
