"""Tokens found by fingerprint are handed out only once their row is seen to hold the value asked for.

The fingerprint column is the lookup, and nothing in the row binds it to the sealed value: the
associated data binds the ciphertext to (type, token), not to the fingerprint. A database owner
who swaps two rows' fingerprints would otherwise make Tokenize(value A) answer person B's token
from then on, silently (insider round 8, Finding 5). So a found row's sealed value is opened and
compared with the normalized value; a row that does not hold it is DATA_LOSS for that value, never
a token, and never a new token either (the value has a row: issuing another would hide the damage).

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
from vault_service.domain.errors import KeysUnavailable, StoredValueAltered, VaultError
from vault_service.domain.token_types import TokenType
from vault_service.service.ports import FoundToken
from vault_service.service.revealing import KeySource

log = logging.getLogger(__name__)

FoundOutcome = str | VaultError | None
"""A found value's token, why it is not handed out, or None where no row was found."""

_TOKEN, _DEK_ID, _SEALED = itemgetter(1), itemgetter(2), itemgetter(3)  # of a FoundToken


def row_altered() -> StoredValueAltered:
    """The item error of a value whose found row holds another value (or none)."""
    return StoredValueAltered(
        "stored token row altered in the database: the row found for this value holds another value;"
        " no token is returned, retrying cannot help, report it to the security team"
    )


def checked_tokens(
    keys: KeySource, token_type: TokenType, values: Sequence[str], rows: Sequence[FoundToken | None]
) -> list[FoundOutcome]:
    """Per normalized value, in order: its row's token if the row's sealed value opens to it.

    `rows[i]` is the row found for `values[i]` (None: none found, left None). A row whose sealed
    value is another value, or does not open for its token, gives StoredValueAltered; one whose
    data key cannot be loaded gives KeysUnavailable (retry later). Each is logged, without values.
    """
    if rows and None not in rows:
        every = cast(Sequence[FoundToken], rows)
        dek_ids = set(map(_DEK_ID, every))
        sealed = list(map(_SEALED, every))
        if len(dek_ids) == 1 and None not in sealed:
            tokens = list(map(_TOKEN, every))
            try:
                key = keys.key(next(iter(dek_ids)))
            except KeysUnavailable:
                pass  # the general path below reports it per value
            else:
                if all_open_to(key, token_type, tokens, sealed, values):
                    return tokens
    return _checked_one_by_one(keys, token_type, values, rows)


def _checked_one_by_one(
    keys: KeySource, token_type: TokenType, values: Sequence[str], rows: Sequence[FoundToken | None]
) -> list[FoundOutcome]:
    outcomes: list[FoundOutcome] = [None] * len(values)
    groups: dict[int, tuple[list[int], list[str], list[bytes]]] = {}  # data key -> positions, tokens, sealed
    altered = 0
    for index, row in enumerate(rows):
        if row is None:
            continue
        _, token, dek_id, box = row
        if box is None:  # a fingerprint left on an erased row: it holds no value at all
            outcomes[index] = row_altered()
            altered += 1
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
