"""Two writers issuing a token for the same new value at once: one token wins, everyone gets it.

The store inserts new tokens with ON CONFLICT DO NOTHING and reads back the tokens of values
another writer issued first; these tests drive that against the real database of the stack.
"""

from __future__ import annotations

import threading
import uuid

from tests.conftest import RunningVault
from vault_service.domain.crypto import fingerprint, seal
from vault_service.domain.errors import VaultError
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens
from vault_service.service.ports import NewTokenRow

IP = TokenType.IP


def _fresh_ips(count: int) -> list[str]:
    """IPv4 values no other test uses (from a random /16 of 10.0.0.0/8)."""
    base = uuid.uuid4().int
    return [f"10.{base % 256}.{(base >> 8) % 256 + n // 256 % 256}.{n % 256}" for n in range(count)]


def _rows(vault: RunningVault, values: list[str]) -> list[NewTokenRow]:
    ring = vault.wired.keys.ring
    dek, fp_key = ring.active_encryption_key, ring.fingerprint_key
    return [
        NewTokenRow(token, IP.type_name, fingerprint(fp_key, IP, v), fp_key.key_id, dek.key_id, seal(dek, IP, token, v))
        for v, token in zip(values, new_tokens(IP, len(values)), strict=True)
    ]


def test_a_writer_that_lost_the_race_gets_the_winners_tokens_and_adds_nothing(vault: RunningVault) -> None:
    # The live keys (other tests of the session may have rotated them since this vault looked).
    store, generation = vault.wired.token_store, vault.wired.keys.refresh().generation
    values = _fresh_ips(3)
    races = store.races
    first = store.insert_new(_rows(vault, values[:2]), generation)
    assert len(first) == 2 and store.races == races
    late = _rows(vault, values)  # two of three were issued meanwhile, under other tokens
    result = store.insert_new(late, generation)
    assert store.races == races + 2  # the two values another writer issued first, counted
    assert {fp: result[fp] for fp in first} == first
    assert result[late[2].fingerprint] == late[2].token
    assert len(store.find_by_fingerprints(IP.type_name, [r.fingerprint for r in late])) == 3


def test_concurrent_tokenize_of_the_same_new_values_gives_one_token_each(vault: RunningVault) -> None:
    values = _fresh_ips(300)
    start = threading.Barrier(6)
    results: list[list[str | VaultError]] = []

    def tokenize() -> None:
        start.wait()
        results.append(vault.wired.vault.tokenize("etl-service", [(IP, v) for v in values]))

    threads = [threading.Thread(target=tokenize) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(r == results[0] for r in results)
    assert all(isinstance(t, str) and t.startswith("ip_") for t in results[0])
    assert len(set(results[0])) == 300
