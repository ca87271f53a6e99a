"""Tokenize's race path: the row another writer stored first is read back once and checked as a found one.

The insert that meets another writer's row reads that row back (token, data key, sealed value)
in its own transaction, the way the lookup reads rows: no second query for it. A winner erased
between the insert and the read back is a benign Tokenize/Erase race: the call looks the value up
again and issues a new token, no tamper alarm. A winner holding another value still is one.
"""

from __future__ import annotations

from collections.abc import Sequence

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from tests.unit.vault_policies import POLICY
from vault_service.domain.crypto import seal
from vault_service.domain.errors import StoredValueAltered
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import FoundToken, Inserted, KeyGeneration, NewTokenRow, StoredToken
from vault_service.service.vault import TokenVault

IP = TokenType.IP
VALUE = "10.7.7.7"


class RacingStore(FakeTokenStore):
    """Another writer stores each value first, just before this writer's first insert; how it ends is `race`.

    kept: its row stays. erased: it is erased before the insert's read back. other-value: its row
    holds another value (a row the database owner pointed the fingerprint at).
    """

    def __init__(self, keys: KeyManager, race: str) -> None:
        super().__init__()
        self.keys, self.race = keys, race
        self.lookups = self.fetches = 0
        self.winner: str | None = None

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, FoundToken]:
        self.lookups += 1
        return super().find_by_fingerprints(token_type, fingerprints)

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        self.fetches += 1
        return super().fetch(tokens)

    def insert_new(self, rows: Sequence[NewTokenRow], generation: KeyGeneration) -> Inserted:
        if self.winner is None:
            (row,) = rows
            (self.winner,) = new_tokens(IP, 1)
            held = "10.6.6.6" if self.race == "other-value" else VALUE
            dek = self.keys.ring.active_encryption_key
            self.rows[self.winner] = row._replace(token=self.winner, sealed=seal(dek, IP, self.winner, held))
            if self.race == "erased":  # the insert met the winner's row; an erasure cleared it before the read back
                self.erased.add(self.winner)
                return Inserted({}, {})
        lookups = self.lookups
        inserted = super().insert_new(rows, generation)  # the fake's own lookups are not the vault's
        self.lookups = lookups
        return inserted


def _tokenize_racing(race: str) -> tuple[object, RacingStore]:
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    store = RacingStore(keys, race)
    (outcome,) = TokenVault(store, keys, POLICY, FakeAuditLog()).tokenize("etl", [(IP, VALUE)])
    return outcome, store


def test_the_winners_row_read_back_by_the_insert_gives_its_token_without_a_second_query() -> None:
    outcome, store = _tokenize_racing("kept")
    assert outcome == store.winner
    assert (store.lookups, store.fetches) == (1, 0)


def test_a_winner_erased_before_the_read_back_is_looked_up_again_not_reported_as_tampering() -> None:
    outcome, store = _tokenize_racing("erased")
    assert not isinstance(outcome, StoredValueAltered), outcome
    assert isinstance(outcome, str) and outcome != store.winner
    assert store.rows[outcome].fingerprint == store.rows[str(store.winner)].fingerprint  # the same value
    assert (store.lookups, store.fetches) == (2, 0)


def test_a_winners_row_holding_another_value_is_still_data_loss() -> None:
    outcome, _ = _tokenize_racing("other-value")
    assert isinstance(outcome, StoredValueAltered)
