"""The token cache: bounded, forgets its older half when full, keeps what is in use."""

from vault_service.domain.token_types import TokenType
from vault_service.service.token_cache import TokenCache


def _fill(cache: TokenCache, values: range) -> list[bytes]:
    keys = [cache.key(TokenType.IP, f"10.0.{n // 256}.{n % 256}") for n in values]
    for n, key in enumerate(keys):
        cache.put(key, f"ip_token{n}")
    return keys


def test_never_holds_more_than_its_capacity() -> None:
    cache = TokenCache(100)
    _fill(cache, range(1000))
    assert 0 < len(cache) <= 100


def test_a_full_cache_keeps_its_newer_half() -> None:
    cache = TokenCache(100)
    keys = _fill(cache, range(150))
    assert all(cache.get(k) is not None for k in keys[100:])  # the last 50 survived the turnover
    assert cache.get(keys[0]) is None


def test_an_entry_in_use_survives_turnovers() -> None:
    cache = TokenCache(100)
    hot = cache.key(TokenType.IP, "192.0.2.1")
    cache.put(hot, "ip_hot")
    for start in range(0, 500, 25):
        _fill(cache, range(1000 + start, 1000 + start + 25))
        assert cache.get(hot) == "ip_hot"


def test_hits_and_misses_are_counted_and_clear_forgets_everything() -> None:
    cache = TokenCache(10)
    key = cache.key(TokenType.DEVICE_ID, "device-1")
    assert cache.get(key) is None
    cache.put(key, "dev_x")
    assert cache.get(key) == "dev_x"
    assert (cache.hits, cache.misses) == (1, 1)
    cache.clear()
    assert cache.get(key) is None and len(cache) == 0


def test_capacity_zero_disables_it() -> None:
    cache = TokenCache(0)
    key = cache.key(TokenType.IP, "192.0.2.1")
    cache.put(key, "ip_x")
    assert cache.get(key) is None and len(cache) == 0


def test_keys_are_macs_not_values() -> None:
    a, b = TokenCache(10), TokenCache(10)
    assert b"192.0.2.1" not in a.key(TokenType.IP, "192.0.2.1")
    assert a.key(TokenType.IP, "192.0.2.1") != b.key(TokenType.IP, "192.0.2.1")  # per-process secret
