"""A token found by fingerprint is handed out only when its row holds the value asked for."""

from __future__ import annotations

import os

from vault_service.domain.crypto import DataKey, seal
from vault_service.domain.errors import ErasedValuePresent, KeysUnavailable, StoredValueAltered
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens
from vault_service.service.found_tokens import checked_tokens
from vault_service.service.ports import FoundToken

IP = TokenType.IP


class Keys:
    """Data keys by id; a missing id is not loaded."""

    def __init__(self, *keys: DataKey) -> None:
        self.keys = {k.key_id: k for k in keys}

    def key(self, key_id: int) -> DataKey:
        if key_id not in self.keys:
            raise KeysUnavailable(f"data key {key_id} is not loaded")
        return self.keys[key_id]


def _row(key: DataKey, token: str, value: str) -> FoundToken:
    return (os.urandom(32), token, key.key_id, seal(key, IP, token, value), False)


def test_rows_that_hold_the_values_give_their_tokens() -> None:
    key = DataKey(1, os.urandom(32))
    values = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    tokens = new_tokens(IP, 3)
    rows = [_row(key, t, v) for t, v in zip(tokens, values, strict=True)]
    assert checked_tokens(Keys(key), IP, values, list(rows)) == tokens


def test_each_row_is_judged_on_its_own_across_keys_missing_rows_and_altered_ones() -> None:
    old, new, gone = DataKey(1, os.urandom(32)), DataKey(2, os.urandom(32)), DataKey(3, os.urandom(32))
    values = [f"10.0.1.{n}" for n in range(6)]
    tokens = new_tokens(IP, 6)
    rows: list[FoundToken | None] = [
        _row(old, tokens[0], values[0]),
        _row(new, tokens[1], values[1]),
        _row(new, tokens[2], values[3]),  # the owner pointed value 2's fingerprint at value 3's row
        None,  # not found: left for the caller to issue
        (*_row(old, tokens[4], values[4])[:3], None, True),  # a fingerprint left on an erased row
        _row(gone, tokens[5], values[5]),  # its key is not loaded
    ]
    outcomes = checked_tokens(Keys(old, new), IP, values, rows)
    assert outcomes[:2] == tokens[:2] and outcomes[3] is None
    assert isinstance(outcomes[2], StoredValueAltered) and isinstance(outcomes[4], StoredValueAltered)
    assert "altered in the database" in str(outcomes[2]) and "security team" in str(outcomes[2])
    assert isinstance(outcomes[5], KeysUnavailable)
    assert not any(v in str(o) for v in values for o in outcomes)


def test_an_erased_row_whose_value_and_fingerprint_are_back_gives_no_token() -> None:
    """Attack 41, A41-2 (F2b): the owner writes an erased row's sealed value and fingerprint back, `erased_at`
    kept. The row opens to the value asked for, yet its token is not handed out (it would link the person's new
    rows to the history the erasure cut): DATA_LOSS, and the token is given to the caller to report."""
    key = DataKey(1, os.urandom(32))
    values = ["10.0.2.1", "10.0.2.2"]
    tokens = new_tokens(IP, 2)
    rows: list[FoundToken | None] = [_row(key, tokens[0], values[0]), (*_row(key, tokens[1], values[1])[:4], True)]
    present: list[str] = []
    outcomes = checked_tokens(Keys(key), IP, values, rows, present)
    assert outcomes[0] == tokens[0]
    assert isinstance(outcomes[1], ErasedValuePresent) and "security team" in str(outcomes[1])
    assert present == [tokens[1]]
    assert not any(v in str(o) for v in values for o in outcomes)
