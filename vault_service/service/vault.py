"""Tokenize, Detokenize and Erase: the vault's use cases, independent of gRPC and SQL.

Detokenize is here; Tokenize is in tokenizing.py, Erase in erasing.py, and what they share (wiring, the
audited refusal, the purpose an audit row keeps) in vault_base.py. What a reveal shows, and how values are
opened, is in `revealing.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import compress

from vault_service.domain.audit import AuditEvent, with_fetch_head
from vault_service.domain.errors import PermissionDenied, VaultError
from vault_service.domain.identity import Caller
from vault_service.domain.purpose import PurposeHoldsOwnValue, check_names_no_token_of, check_purpose, values_spelled_by
from vault_service.domain.tokens import types_of_tokens
from vault_service.service.erasing import Erasing
from vault_service.service.revealing import DetokenizeOutcome, Revealed, report_erased_present, reveal, reveal_hasher
from vault_service.service.tokenizing import Tokenizing
from vault_service.service.vault_base import caller_name, present_types, refusal_event, type_names


class TokenVault(Tokenizing, Erasing):
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
