"""What a Detokenize call reveals: each token's value opened and shown at the caller's level.

Values are opened in groups of one data key and one token type (one decrypt per value, the
results made in C); the audit log keeps a keyed hash of each revealed token, never the token.
The purpose is kept in the audit log for good, so it must not spell a value of the call. What
happens when it does depends on what the caller is shown, so that the outcome never confirms a
guess the caller could not check otherwise:
- a value revealed PLAIN: the call is refused (`PurposeHoldsOwnValue`) before anything is
  shown; the caller sees that value anyway, so the refusal tells it nothing new - but it does
  confirm the guess, so the refusal's audit row names the call's tokens (`audit who-saw`);
- a value revealed masked (or erased, which shows nothing): the call goes on exactly as for any
  other purpose, and the audit row keeps no purpose (`RevealedCall.purpose_withheld`). Refusing
  here would tell a masked client, or an eraser, whether its guess was right (review A, finding 1).
A value of a type the client may not see (level none) is opened too, only to be compared: the
caller is shown the same PermissionDenied either way, and a hit is handled as for a masked value
(withheld). The call's detokenize budget already counted that token, so opening it takes nothing
more from any limit; it costs one decrypt (measured at 1.2-1.5 µs a token, about a tenth of the
refused token's cost end to end: docs/threat-model.md, *What the audit trail proves*).
A value that exists but was not compared (erased, or whose stored value does not open) leaves
nothing to tell what the purpose spells of it: the audit row keeps no purpose either
(`RevealedCall.purpose_compared` is False; attack 12, finding 1). Once a value is erased nothing
in the vault can recognize it any more. A string that is not a token, or a well-formed token that
was never issued (no row: rows are never deleted, an erasure only clears the value), has no value
the purpose could spell, so it does not withhold the purpose: else any client could blank its
purpose by adding `x` or a made-up token to a call (review 12, finding 1).
A purpose this comparison lets through is then looked up among every value stored in the vault
(`stored_values.py`): one naming a value of another call is withheld too, never refused (attack
14, finding 3). A token of the call in the purpose, also split by separators, is refused before
anything is opened (`purpose.check_names_no_token_of`, attack 14, finding 7).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import repeat
from typing import NamedTuple, Protocol, cast

from tokenvault_common.device_spellings import compact_form
from vault_service.domain.audit import REVEAL_HASH_BYTES
from vault_service.domain.crypto import DataKey, open_sealed_many
from vault_service.domain.errors import (
    ErasedValuePresent,
    InvalidValue,
    KeysUnavailable,
    PermissionDenied,
    StoredValueAltered,
    TokenNotFound,
    VaultError,
)
from vault_service.domain.masking import mask
from vault_service.domain.policy import RevealLevel
from vault_service.domain.purpose import PurposeHoldsOwnValue
from vault_service.domain.token_types import TokenType
from vault_service.service.ports import StoredToken

log = logging.getLogger(__name__)


class KeySource(Protocol):
    """Where data keys come from by id (the key manager)."""

    def key(self, key_id: int) -> DataKey:
        """The data key with this id; KeysUnavailable when it cannot be loaded."""
        ...


class Revealed(NamedTuple):
    """A detokenized value as the caller may see it (a NamedTuple: one is built per value)."""

    token_type: TokenType
    value: str
    level: RevealLevel

    def __repr__(self) -> str:
        return f"Revealed(token_type={self.token_type.type_name}, value=<redacted>, level={self.level.name})"


_new_revealed = cast(Callable[[type[Revealed], tuple[object, ...]], Revealed], tuple.__new__)
"""Revealed(*fields) without the Python frame of a NamedTuple's __new__ (one is made per value)."""

DetokenizeOutcome = Revealed | VaultError


class RevealedCall(NamedTuple):
    """Each token's outcome, in order, and whether the purpose may be kept in the audit row."""

    outcomes: list[DetokenizeOutcome]
    purpose_withheld: bool
    """The purpose spells a value this call opened but does not show PLAIN: audit it without the purpose."""
    purpose_compared: bool = True
    """Every value the call's tokens name was opened and compared with the purpose (a string that is
    not a token and a token never issued name none). When not (erased, does not open), nothing tells
    what the purpose spells of it: audit it without the purpose (`keeps_purpose`)."""
    erased_present: tuple[str, ...] = ()
    """Tokens whose row is erased (`erased_at` set) and holds a value again: not revealed (ErasedValuePresent);
    the caller reports them (`report_erased_present`)."""

    @property
    def keeps_purpose(self) -> bool:
        """Whether the audit row may keep the purpose in clear: compared with every value, spelling none."""
        return self.purpose_compared and not self.purpose_withheld


def reveal(
    keys: KeySource,
    client: str,
    tokens: Sequence[str],
    types: Sequence[TokenType | None],
    levels: dict[TokenType, RevealLevel],
    rows: Mapping[str, StoredToken],
    spelled: frozenset[str] = frozenset(),
) -> RevealedCall:
    """Each token's outcome, in order; the values are opened in groups of one data key and type.

    Per token this is one pass that sorts it into its group (or decides its error) and one
    decrypt; the Revealed tuples of a group are made in C. Each opened value is compared with
    `spelled` (the values the purpose spells, `values_spelled_by`): one set test per value, in C.
    A hit in a group revealed PLAIN raises PurposeHoldsOwnValue; a hit in any other group sets
    `purpose_withheld` and changes nothing the caller is shown (see the module docstring). A value
    of a type at level none is opened only for that comparison and shown as PermissionDenied. A
    token whose value exists but is not compared (erased, or it does not open) clears
    `purpose_compared`; one that is not a token or was never issued does not (it names no value).
    """
    outcomes: list[DetokenizeOutcome | None] = [None] * len(tokens)
    by_id = {id(token_type): (token_type, level) for token_type, level in levels.items()}
    groups: dict[tuple[int, int], tuple[list[int], list[str], list[bytes]]] = {}
    none, plain = RevealLevel.NONE, RevealLevel.PLAIN
    withheld = False
    compared = True  # cleared by the first value that exists but is not compared (erased, does not open)
    erased_present: list[str] = []
    position = -1
    for token, token_type, row in zip(tokens, types, map(rows.get, tokens), strict=True):
        position += 1
        if token_type is None:  # names no value: nothing the purpose could spell
            outcomes[position] = InvalidValue("not a token: expected <type prefix>_<22 characters>")
        elif row is None or row.sealed is None:
            if row is not None:  # erased: a value existed and can no longer be compared
                compared = False
            if by_id[id(token_type)][1] is none:
                outcomes[position] = _not_permitted(client, token_type)
            else:
                outcomes[position] = TokenNotFound("no value is stored for this token (never issued or erased)")
        elif row.erased:  # erased, yet a value is there again: the erasure undone in the database (A41-2)
            compared = False  # not opened: nothing of it is compared, shown or told
            erased_present.append(token)
            none_level = by_id[id(token_type)][1] is none
            outcomes[position] = _not_permitted(client, token_type) if none_level else _erased_present()
        else:  # level none too: opened only to be compared, shown as PermissionDenied
            group = groups.get((row.dek_id, id(token_type)))
            if group is None:
                group = groups[(row.dek_id, id(token_type))] = ([], [], [])
            group[0].append(position)
            group[1].append(token)
            group[2].append(row.sealed)
    for (dek_id, type_id), (positions, group_tokens, sealed) in groups.items():
        token_type, level = by_id[type_id]
        values, failure = _open(keys, dek_id, token_type, group_tokens, sealed)
        unopened = values.count(None)
        if unopened:  # a value exists but cannot be compared
            compared = False
            _log_unopened(dek_id, token_type, unopened, failure)
        if level is plain:
            if _spells_one_of(spelled, token_type, values):
                raise PurposeHoldsOwnValue(token_type)
        else:  # compared all the same, and a hit changes nothing the caller sees: no guess is confirmed
            withheld = withheld or _spells_one_of(spelled, token_type, values)
        made: list[DetokenizeOutcome]
        if level is none:  # opened only for the comparison: the caller is shown none of it, as before
            made = [_not_permitted(client, token_type) for _ in values]
        else:
            if level is not plain:
                values = [mask(token_type, v) if v is not None else None for v in values]
            made = list(map(_new_revealed, repeat(Revealed), zip(repeat(token_type), values, repeat(level))))
            if unopened:
                for index, value in enumerate(values):
                    if value is None:
                        made[index] = _unopened(failure)
        if len(made) == len(outcomes):
            return RevealedCall(made, withheld, compared)  # one group holds every token, in order
        for position, outcome in zip(positions, made, strict=True):
            outcomes[position] = outcome
    if erased_present:
        return RevealedCall(outcomes, withheld, compared, tuple(erased_present))  # type: ignore[arg-type]
    return RevealedCall(outcomes, withheld, compared)  # type: ignore[arg-type]  # every position is set above


ERASED_VALUE_PRESENT = (
    "the value of an erased token is present again in the vault's database (the erasure was undone there):"
    " nothing is revealed or handed out for it; retrying cannot help, report it to the security team"
)
"""The item error of a token (Detokenize) or value (Tokenize) whose erased row holds a value again (A41-2)."""


def _erased_present() -> ErasedValuePresent:
    return ErasedValuePresent(ERASED_VALUE_PRESENT)


_erased_present_count = 0
_erased_present_lock = threading.Lock()


def erased_values_present() -> int:
    """How many times this process met an erased token's row holding a value again (each token of each call)."""
    return _erased_present_count


def report_erased_present(method: str, token_hashes: Iterable[bytes]) -> None:
    """Log and count erased rows found holding a value again (attack 41, A41-2).

    An error naming the tokens by their keyed audit hashes, never a token or a value: the hashes the
    audit rows keep, so the security team finds each token's erase row and reveals among them.
    """
    global _erased_present_count
    hashes = [h.hex() for h in token_hashes]
    with _erased_present_lock:
        _erased_present_count += len(hashes)
    log.error(
        "the value of an erased token is present again in vault.tokens (erased_at set, a value written back):"
        " the erasure was undone in the database; refused, nothing revealed or handed out. Report it to the"
        " security team: the token hashes are those the audit rows keep (vault.audit_log.revealed), as the erase"
        " row of each token and every reveal of it do",
        extra={"method": method, "items": len(hashes), "token_hashes": ",".join(hashes)},
    )


def _spells_one_of(spelled: frozenset[str], token_type: TokenType, values: list[str | None]) -> bool:
    """Whether one of `values` (None: did not open) is among `spelled` (case-folded).

    Stored ips are canonical, hence already lower case. Device ids are compared case-folded, as
    written and in their compact form (`PIXEL-7A-GX7AS` as `pixel7agx7as`, which `spelled` holds
    for every spelling of it with other separators or none). Compacting costs about a microsecond
    a value, more than the rest of the comparison, so it is done only for a value whose first two
    characters begin one of the compact forms the purpose spells (`_heads`; usually none does).
    """
    if token_type is TokenType.IP:
        return not spelled.isdisjoint(values)
    folded = [value.casefold() for value in values if value]
    if not spelled.isdisjoint(folded):
        return True
    heads = _heads(spelled)
    for value in folded:
        head = value[:2]
        if head.isascii() and head.isalnum() and head not in heads:
            continue  # its compact form starts with `head` too: it is not among `spelled`
        if compact_form(value) in spelled:
            return True
    return False


@lru_cache(maxsize=64)
def _heads(spelled: frozenset[str]) -> frozenset[str]:
    """The first two characters of each value in `spelled` (once per distinct purpose: a frozenset keeps its hash)."""
    return frozenset(value[:2] for value in spelled)


def _open(
    keys: KeySource, dek_id: int, token_type: TokenType, tokens: list[str], sealed: list[bytes]
) -> tuple[list[str | None], str | None]:
    """The opened values (None where one does not open), and why the key is missing (None: it is loaded)."""
    try:
        key = keys.key(dek_id)
    except KeysUnavailable as error:
        return [None] * len(tokens), str(error)
    return open_sealed_many(key, token_type, tokens, sealed), None


def _not_permitted(client: str, token_type: TokenType) -> PermissionDenied:
    """The item error of a token of a type the client may not see (level none)."""
    return PermissionDenied(f"client {client!r} may not detokenize {token_type.type_name} tokens")


def _log_unopened(dek_id: int, token_type: TokenType, unopened: int, key_missing: str | None) -> None:
    """Log (counts, never a value) that `unopened` stored values of a group did not open, and why."""
    if key_missing is None:  # the key is loaded: the stored ciphertext itself does not authenticate
        log.error(
            "stored values do not authenticate for their tokens: altered in the database?",
            extra={"dek_id": dek_id, "token_type": token_type.type_name, "items": unopened},
        )
    else:
        log.error("cannot open a stored value", extra={"dek_id": dek_id, "error": key_missing, "items": unopened})


def _unopened(key_missing: str | None) -> VaultError:
    """The item error of a value that did not open: the key is missing (retry later), or the value was altered."""
    if key_missing is not None:
        return KeysUnavailable("the value cannot be decrypted with the keys loaded; retry later")
    return StoredValueAltered(
        "the stored value for this token does not authenticate: it may have been altered in the database;"
        " retrying cannot help, report it to the security team"
    )


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
