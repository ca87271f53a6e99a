"""The key maintainer clears the token cache whenever the database's erasure mark moves.

The mark is the count of erasures (migration 0014), which moves with every commit; these
tests pin what the maintainer does with it. Against Postgres, with an erasure that commits
after a later one: tests/integration/test_erasure_across_replicas.py.
"""

from __future__ import annotations

from typing import cast

from tests.unit.fakes import FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.maintenance import DATABASE, KeyMaintainer
from vault_service.service.ports import TokenStore
from vault_service.service.token_cache import TokenCache


class _Marks(FakeTokenStore):
    """A token store whose erasure mark the test sets (or makes unreadable with None)."""

    def __init__(self) -> None:
        super().__init__()
        self.mark: int | None = 0

    def last_erasure(self) -> object:
        if self.mark is None:
            raise ConnectionError("database down")
        return self.mark


def _maintainer(store: _Marks, cache: TokenCache) -> KeyMaintainer:
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    return KeyMaintainer(keys, cast(TokenStore, store), cache, lambda dependency, ok: None, interval=3600)


def _cached(cache: TokenCache) -> None:
    cache.put(cache.key(TokenType.IP, "192.0.2.1"), "ip_" + "A" * 22, cache.epoch)


def test_a_moved_mark_clears_the_cache_and_an_unmoved_one_keeps_it() -> None:
    store, cache = _Marks(), TokenCache(100)
    maintainer = _maintainer(store, cache)
    maintainer.start()
    try:
        _cached(cache)
        maintainer.check()
        assert len(cache) == 1  # nothing erased since start
        store.mark = 1
        maintainer.check()
        assert len(cache) == 0
        _cached(cache)
        maintainer.check()
        assert len(cache) == 1  # the same erasure is not a reason to clear again
    finally:
        maintainer.stop()


def test_a_mark_unreadable_at_start_clears_at_the_first_check_that_reads_one() -> None:
    store, cache = _Marks(), TokenCache(100)
    store.mark = None
    maintainer = _maintainer(store, cache)
    maintainer.start()
    try:
        _cached(cache)
        maintainer.check()
        assert len(cache) == 1 and not maintainer.healthy[DATABASE]
        store.mark = 5  # erasures may have committed while the database was out of reach
        maintainer.check()
        assert len(cache) == 0 and maintainer.healthy[DATABASE]
    finally:
        maintainer.stop()
