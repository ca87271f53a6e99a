"""When a failed erasure gives its erase budget back (chaos 50, V50-4; review 51, R51-2), over fakes.

The decision (service/erasing.py): a failure before the store's erase erased nothing, so the budget is given back;
a failure of the erase itself gives it back only when the store's error says it erased nothing (`erased_nothing`:
its transaction ended before its COMMIT, or was refused), else it stays spent; a give-back that fails too leaves
the erasure's own error as the answer. The integration tests (tests/integration/test_erase_budget_given_back.py)
show the same against PostgreSQL; these show the decision alone.
"""

from __future__ import annotations

import logging

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.errors import RateLimited, StorageError, VaultError
from vault_service.domain.policy import parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.vault import TokenVault

POLICY = parse_policy(
    {
        "defaults": {"limits": {"erase_per_second": 0.001, "erase_burst": 2}},  # one call of 2 spends it
        "clients": {"etl": {"tokenize": ["ip"]}, "officer": {"erase": ["ip"]}},
    }
)


def _vault(store: FakeTokenStore) -> tuple[TokenVault, list[str]]:
    """A vault over `store` and two tokens the officer may erase."""
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store, keys, POLICY, FakeAuditLog())
    return vault, [str(t) for t in vault.tokenize("etl", [(TokenType.IP, "10.51.9.1"), (TokenType.IP, "10.51.9.2")])]


def _failed(error: VaultError, erased_nothing: bool) -> VaultError:
    error.erased_nothing = erased_nothing
    return error


def _budget_given_back(vault: TokenVault, store: FakeTokenStore, tokens: list[str]) -> bool:
    """Whether the officer's retry, the store mended, finds its budget (it erases both tokens) or is refused."""
    store.fails.clear()
    try:
        outcomes = vault.erase("officer", tokens, "GDPR-51")
    except RateLimited:
        return False
    assert outcomes == [None, None] and store.erased == set(tokens)
    return True


def test_an_erase_the_store_says_erased_nothing_gives_the_budget_back() -> None:
    store = FakeTokenStore()
    vault, tokens = _vault(store)
    store.fails["erase"] = _failed(StorageError("a row it erases is held; nothing was erased"), erased_nothing=True)
    with pytest.raises(StorageError, match="nothing was erased"):
        vault.erase("officer", tokens, "GDPR-51")
    assert _budget_given_back(vault, store, tokens)


def test_an_erase_whose_error_does_not_say_it_erased_nothing_keeps_the_budget_spent() -> None:
    store = FakeTokenStore()
    vault, tokens = _vault(store)
    store.fails["erase"] = _failed(StorageError("the COMMIT's answer was lost"), erased_nothing=False)
    with pytest.raises(StorageError, match="answer was lost"):
        vault.erase("officer", tokens, "GDPR-51")
    assert not _budget_given_back(vault, store, tokens)  # it may have erased: spent


def test_a_failure_before_the_erase_gives_the_budget_back_whatever_its_error_says() -> None:
    store = FakeTokenStore()
    vault, tokens = _vault(store)
    # the erasure's rows, read before it compares the purpose: failed, saying nothing of what it erased
    store.fails["fetch"] = _failed(StorageError("the database is unavailable"), erased_nothing=False)
    with pytest.raises(StorageError, match="unavailable"):
        vault.erase("officer", tokens, "GDPR-51")
    assert store.erase_events == []  # the store's erase was never asked
    assert _budget_given_back(vault, store, tokens)


def test_a_give_back_that_fails_leaves_the_erasures_own_error_and_the_budget_spent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeTokenStore()
    vault, tokens = _vault(store)
    erasure_error = _failed(StorageError("a row it erases is held; nothing was erased"), erased_nothing=True)
    store.fails["erase"] = erasure_error
    store.fails["give_back_budget"] = StorageError("the budget row is held")
    with caplog.at_level(logging.WARNING), pytest.raises(StorageError) as raised:
        vault.erase("officer", tokens, "GDPR-51")
    assert raised.value is erasure_error  # not the give-back's
    assert "could not give its budget back (StorageError)" in caplog.text and "budget row is held" not in caplog.text
    assert not _budget_given_back(vault, store, tokens)
