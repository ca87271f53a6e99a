"""Tokens found by fingerprint are handed out only once their row is seen to hold the value asked for.

The fingerprint column is the lookup, and nothing in the row binds it to the sealed value: the
associated data binds the ciphertext to (type, token), not to the fingerprint. A database owner
who swaps two rows' fingerprints would otherwise make Tokenize(value A) answer person B's token
from then on, silently (insider round 8, Finding 5). So a found row's sealed value is opened and
compared with the normalized value; a row that does not hold it is DATA_LOSS for that value, never
a token, and never a new token either (the value has a row: issuing another would hide the damage).

A found row that was erased (`erased_at` set) is refused the same way, whatever it holds: its value and
fingerprint were cleared by the erasure, so a row found by fingerprint that says it was erased had both
written back by the database owner (attack 41, A41-2, F2b). Handing its token out would link the person's
new rows to the history the erasure cut; minting a new token cannot be done either (the fingerprint is the
old row's, unique) and would hide the damage. So the value is DATA_LOSS (`ErasedValuePresent`), no token:
the ETL dead-letters that event and loads the rest; the caller logs and counts it (`report_erased_present`).

Rows are opened in groups of one data key (the keys are in memory: one AES-GCM decrypt per
value); the common case, every value found under one key and every one matching, is a handful of
calls made in C and one list comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from operator import itemgetter
from typing import cast

from vault_service.domain.crypto import all_open_to, open_sealed_many
from vault_service.domain.errors import ErasedValuePresent, KeysUnavailable, StoredValueAltered, VaultError
from vault_service.domain.token_types import TokenType
from vault_service.service.ports import FoundToken
from vault_service.service.revealing import ERASED_VALUE_PRESENT, KeySource

log = logging.getLogger(__name__)

FoundOutcome = str | VaultError | None
"""A found value's token, why it is not handed out, or None where no row was found."""

_TOKEN, _DEK_ID, _SEALED, _ERASED = itemgetter(1), itemgetter(2), itemgetter(3), itemgetter(4)  # of a FoundToken


def row_altered() -> StoredValueAltered:
    """The item error of a value whose found row holds another value (or none)."""
    return StoredValueAltered(
        "stored token row altered in the database: the row found for this value holds another value;"
        " no token is returned, retrying cannot help, report it to the security team"
    )


def checked_tokens(
    keys: KeySource,
    token_type: TokenType,
    values: Sequence[str],
    rows: Sequence[FoundToken | None],
    erased_present: list[str] | None = None,
) -> list[FoundOutcome]:
    """Per normalized value, in order: its row's token if the row's sealed value opens to it.

    `rows[i]` is the row found for `values[i]` (None: none found, left None). A row whose sealed
    value is another value, or does not open for its token, gives StoredValueAltered; one whose
    data key cannot be loaded gives KeysUnavailable (retry later). Each is logged, without values.
    An erased row holding a value again gives ErasedValuePresent, its token added to `erased_present`
    for the caller to report (by its audit hash: `report_erased_present`).
    """
    if rows and None not in rows:
        every = cast(Sequence[FoundToken], rows)
        dek_ids = set(map(_DEK_ID, every))
        sealed = list(map(_SEALED, every))
        if len(dek_ids) == 1 and None not in sealed and True not in map(_ERASED, every):
            tokens = list(map(_TOKEN, every))
            try:
                key = keys.key(next(iter(dek_ids)))
            except KeysUnavailable:
                pass  # the general path below reports it per value
            else:
                if all_open_to(key, token_type, tokens, sealed, values):
                    return tokens
    return _checked_one_by_one(keys, token_type, values, rows, erased_present)


def _checked_one_by_one(
    keys: KeySource,
    token_type: TokenType,
    values: Sequence[str],
    rows: Sequence[FoundToken | None],
    erased_present: list[str] | None,
) -> list[FoundOutcome]:
    outcomes: list[FoundOutcome] = [None] * len(values)
    groups: dict[int, tuple[list[int], list[str], list[bytes]]] = {}  # data key -> positions, tokens, sealed
    altered = 0
    for index, row in enumerate(rows):
        if row is None:
            continue
        _, token, dek_id, box, erased = row
        if box is None:  # a fingerprint left on an erased row: it holds no value at all
            outcomes[index] = row_altered()
            altered += 1
            continue
        if erased:  # erased, yet its value and fingerprint are back: the erasure undone (A41-2, F2b)
            outcomes[index] = ErasedValuePresent(ERASED_VALUE_PRESENT)
            if erased_present is not None:
                erased_present.append(token)
            continue
        positions, tokens, sealed = groups.setdefault(dek_id, ([], [], []))
        positions.append(index)
        tokens.append(token)
        sealed.append(box)
    for dek_id, (positions, tokens, sealed) in groups.items():
        try:
            key = keys.key(dek_id)
        except KeysUnavailable as error:
            log.error("cannot check a stored token row", extra={"dek_id": dek_id, "error": str(error)})
            for index in positions:
                outcomes[index] = KeysUnavailable("the stored value cannot be checked with the keys loaded; retry")
            continue
        opened = open_sealed_many(key, token_type, tokens, sealed)
        for index, token, value in zip(positions, tokens, opened, strict=True):
            if value is not None and value == values[index]:
                outcomes[index] = token
            else:
                outcomes[index] = row_altered()
                altered += 1
    if altered:
        log.error(
            "stored token rows found by fingerprint do not hold the values asked for: altered in the database"
            " (fingerprints moved between rows?); no token returned for them. Report it to the security team",
            extra={"token_type": token_type.type_name, "items": altered},
        )
    return outcomes
