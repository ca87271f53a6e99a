"""Tokenize, Detokenize and Erase: the vault's use cases, independent of gRPC and SQL.

Detokenize and Erase are here; Tokenize is in tokenizing.py and what they share (wiring, the
audited refusal) in vault_base.py. What a reveal shows, and how values are opened, is in
`revealing.py`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from itertools import compress

from tokenvault_common.erase_outcomes import ERASED_BEFORE, NEVER_ISSUED
from vault_service.domain.audit import AuditEvent, with_fetch_head
from vault_service.domain.errors import InvalidValue, PermissionDenied, StoredValueAltered, TokenNotFound, VaultError
from vault_service.domain.identity import Caller
from vault_service.domain.policy import RevealLevel
from vault_service.domain.purpose import (
    WITHHELD_PURPOSE,
    PurposeHoldsOwnValue,
    check_names_no_token_of,
    check_purpose,
    shaped_as_a_stored_value,
    values_spelled_by,
)
from vault_service.domain.purpose_spans import every_group, with_groups_withheld
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import types_of_tokens
from vault_service.service.ports import StoredToken
from vault_service.service.revealing import (
    DetokenizeOutcome,
    Revealed,
    RevealedCall,
    report_erased_present,
    reveal,
    reveal_hasher,
)
from vault_service.service.tokenizing import Tokenizing
from vault_service.service.vault_base import caller_name, present_types, refusal_event, type_names

log = logging.getLogger(__name__)

EraseOutcome = VaultError | None  # None: erased


class TokenVault(Tokenizing):
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

    # -- Detokenize -------------------------------------------------------------------------

    def detokenize(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[DetokenizeOutcome]:
        """The value behind each token as the caller's policy reveals it; every call is audited."""
        caller = Caller.of(client)
        types = types_of_tokens(tokens)  # parsed once per token
        present = present_types(types)
        token_types = type_names(present)
        try:
            if not self._policy.may_detokenize_anything(caller_name(caller)):
                raise PermissionDenied(f"client {caller_name(caller)!r} may not detokenize")
            check_purpose(purpose)
            check_names_no_token_of(purpose, compress(tokens, types))
            self._detokenize_limiter.take(str(caller_name(caller)), len(tokens))
        except VaultError as error:  # nothing opened, so nothing compared: the purpose is withheld
            self._audit_refusal(caller, "detokenize", error, len(tokens), token_types)
            raise
        assert caller is not None
        # Well-formed tokens, once each; with the audit log's newest id this read saw, which the audit row names
        # (`with_fetch_head`): verify tells a fetch before an erasure from one after it (attack 43, A43-1).
        rows, head = self._tokens.fetch_seeing(list(set(compress(tokens, types))))
        if self.erased and rows:  # a token erased before is never revealed, whatever its row says (attack 43)
            rows = self.erased.marked_rows(self._audit_hashers(), rows)
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
            refusal = refusal_event(caller, "detokenize", error, len(tokens), token_types)
            self._audit.append(replace(refusal, outcome=with_fetch_head(refusal.outcome, head), revealed=named))
            raise
        outcomes = checked.outcomes
        purpose = self._kept(caller.name, purpose, checked)
        hash_of = reveal_hasher(self._keys.ring.audit_key)
        if checked.erased_present:  # an erasure undone in the database (A41-2): refused, logged, counted
            report_erased_present("detokenize", map(hash_of, checked.erased_present))
        if list(map(type, outcomes)).count(Revealed) == len(outcomes):
            revealed = list(map(hash_of, tokens))
        else:
            revealed = [hash_of(token) for token, o in zip(tokens, outcomes, strict=True) if type(o) is Revealed]
        # Written before anything is returned: no audit row, no reveal.
        self._audit.append(
            AuditEvent(
                caller.name,
                "detokenize",
                with_fetch_head(f"ok: {len(revealed)} revealed, {len(tokens) - len(revealed)} refused", head),
                len(tokens),
                purpose,
                token_types,
                caller.serial,
                caller.cert_sha256,
                tuple(revealed),
            )
        )
        return outcomes

    # -- Erase ------------------------------------------------------------------------------

    def erase(self, client: Caller | str | None, tokens: Sequence[str], purpose: str) -> list[EraseOutcome]:
        """Destroy the values behind `tokens` (right to erasure), in one transaction with its audit row."""
        caller = Caller.of(client)
        types = types_of_tokens(tokens)
        token_types = type_names(present_types(types))
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
        assert caller is not None
        erasing = False
        try:
            outcomes: list[EraseOutcome] = []
            erasable: list[str] = []
            erasable_types: list[TokenType | None] = []
            for token, token_type in zip(tokens, types, strict=True):
                if token_type is None:
                    outcomes.append(InvalidValue("not a token: expected <type prefix>_<22 characters>"))
                elif token_type not in allowed_types:
                    outcomes.append(
                        PermissionDenied(f"client {caller.name!r} may not erase {token_type.type_name} values")
                    )
                else:
                    outcomes.append(None)
                    erasable.append(token)
                    erasable_types.append(token_type)
            issued = self._issued(tokens, types)
            compared = self._compared(caller, tokens, types, purpose, issued)
            if compared.erased_present:  # an erasure undone in the database (A41-2): this erasure clears it again
                report_erased_present("erase", map(reveal_hasher(self._keys.ring.audit_key), compared.erased_present))
            purpose = self._kept(caller.name, purpose, compared, by_shape=shaped_as_a_stored_value(purpose))
            # The erasure and its audit row commit together (vault.erase_tokens); the row keeps the
            # keyed hash of each token it erased, as a reveal's does, so who-saw names the erasure.
            hashes = tuple(map(reveal_hasher(self._keys.ring.audit_key), erasable))
            event = AuditEvent(
                caller.name, "erase", "", len(tokens), purpose, token_types, caller.serial, caller.cert_sha256, hashes
            )
            erasing = bool(erasable)  # from here a failure may come after the COMMIT: the store says (`erased_nothing`)
            try:
                erased = self._tokens.erase(erasable, event) if erasable else set()
            except StoredValueAltered as error:  # read back not erased: rolled back with its row (attack 41, A41-3)
                self._audit_refusal(caller, "erase", error, len(tokens), token_types)
                raise
            if not erasable:
                self._audit.append(replace(event, outcome="ok: 0 erased"))
            # Known as erased from now on, whatever the owner makes its row say (attack 43, A43-3/4/5).
            self.erased.add(h for token, h in zip(erasable, hashes, strict=True) if token in erased)
            self._cache.clear(self.erased.version)  # the set's version included: Tokenize need not clear it again
            # NOT_FOUND says which: erased before (the token's row is kept, its value cleared) or never issued - the
            # officer's run of tokens `dead-letters erase` named counts only the first as done (attack 39, P2).
            return [
                TokenNotFound(ERASED_BEFORE if token in issued else NEVER_ISSUED)
                if outcome is None and token not in erased
                else outcome
                for token, outcome in zip(tokens, outcomes, strict=True)
            ]
        except VaultError as error:
            if not erasing or error.erased_nothing:  # nothing erased: the budget back, for the retry (V50-4)
                self._give_back_erase_budget(str(caller_name(caller)), len(tokens))
            raise

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

    def _kept(self, client: str, purpose: str, checked: RevealedCall, *, by_shape: bool = False) -> str:
        """The purpose as a served call's audit row keeps it: in clear, in part, or withheld (empty).

        Kept only when every value the call's tokens name was opened and compared with it and it
        spells none of them (`RevealedCall.keeps_purpose`: one spelling a value the call reveals
        masked or erases, or naming a value that exists but was not compared - erased, or it does
        not open - is withheld whole; a string that is not a token and a token never issued name
        no value and withhold nothing). Of a purpose so kept, the runs of groups that name a value
        stored for another call (`stored_values`, cached per purpose; attack 14, finding 3) are
        withheld, each replaced by WITHHELD_SPAN, and the rest kept (`purpose_spans`: a producer
        storing `INC2026Q3` blanked every `INC-2026Q3-...` reference whole; insider round 16, #2) -
        withheld, never refused: a refusal would tell the caller the value is stored.

        Every withhold, whole or in part, is counted alike (`purposes_withheld`, no label) and none
        is logged: a log line or a label per cause told whoever reads the logs or the metrics
        whether a guess the purpose spelled is stored anywhere in the vault (review 15, finding 2).
        The row's outcome already counts the tokens not compared.

        What is withheld for spelling a value of the call or naming a stored one is remembered for
        `client` (`withheld_purposes`, in memory per replica: the whole purpose, or the groups
        withheld), and the client's later call with the identical purpose withholds it again: an
        erasure split into calls, device first, kept `GDPR-2026-801-<device id>` in the ip call's row
        once the device was erased (attack 15, finding 4). A purpose withheld only for a value not
        compared is not remembered.

        `by_shape` (an Erase whose purpose holds what has the shape of a stored value,
        `shaped_as_a_stored_value`) withholds it whole whatever the comparison and the lookup found:
        the decision reads the text alone, so it tells nothing of what is stored, and it holds on
        every replica and after restarts, where the memory above does not (review 16, finding 2).
        """
        if not checked.purpose_compared:
            _count_withheld()
            return WITHHELD_PURPOSE
        if checked.purpose_withheld:
            self.withheld_purposes.remember(client, purpose)
            _count_withheld()
            return WITHHELD_PURPOSE
        named = self.stored_values.groups_naming_stored_values(purpose)
        if named:
            self.withheld_purposes.remember(client, purpose, named)
        withheld = named | self.withheld_purposes.withheld_before(client, purpose)
        if by_shape:
            withheld = every_group(purpose)
        if not withheld:
            return purpose
        _count_withheld()
        return with_groups_withheld(purpose, withheld)


_withheld = 0
_withheld_lock = threading.Lock()


def purposes_withheld() -> int:
    """How many served Detokenize and Erase calls of this process had their purpose withheld, whatever the cause."""
    return _withheld


def _count_withheld() -> None:
    global _withheld
    with _withheld_lock:
        _withheld += 1
