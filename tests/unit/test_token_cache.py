"""The token cache: bounded, forgets its older half when full, keeps what is in use."""

import threading

from vault_service.domain.token_types import TokenType
from vault_service.service.token_cache import TokenCache


def _fill(cache: TokenCache, values: range) -> list[bytes]:
    keys = [cache.key(TokenType.IP, f"10.0.{n // 256}.{n % 256}") for n in values]
    for n, key in enumerate(keys):
        cache.put(key, f"ip_token{n}", cache.epoch)
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
    cache.put(hot, "ip_hot", cache.epoch)
    for start in range(0, 500, 25):
        _fill(cache, range(1000 + start, 1000 + start + 25))
        assert cache.get(hot) == "ip_hot"


def test_hits_and_misses_are_counted_and_clear_forgets_everything() -> None:
    cache = TokenCache(10)
    key = cache.key(TokenType.DEVICE_ID, "device-1")
    assert cache.get(key) is None
    cache.put(key, "dev_x", cache.epoch)
    assert cache.get(key) == "dev_x"
    assert (cache.hits, cache.misses) == (1, 1)
    cache.clear()
    assert cache.get(key) is None and len(cache) == 0


def test_capacity_zero_disables_it() -> None:
    cache = TokenCache(0)
    key = cache.key(TokenType.IP, "192.0.2.1")
    cache.put(key, "ip_x", cache.epoch)
    assert cache.get(key) is None and len(cache) == 0


def test_keys_are_per_process_macs() -> None:
    a, b = TokenCache(10), TokenCache(10)
    assert a.key(TokenType.IP, "192.0.2.1") == a.key(TokenType.IP, "192.0.2.1")
    assert a.key(TokenType.IP, "192.0.2.1") != b.key(TokenType.IP, "192.0.2.1")  # per-process secret
    assert a.key(TokenType.IP, "192.0.2.1") != a.key(TokenType.DEVICE_ID, "192.0.2.1")


def test_a_token_looked_up_before_an_erasure_is_not_kept_after_it() -> None:
    cache = TokenCache(100)
    key = cache.key(TokenType.IP, "192.0.2.1")
    began = cache.epoch  # a tokenize call starts its lookup ...
    cache.clear()  # ... an erasure clears the cache meanwhile ...
    cache.put(key, "ip_erased", began)  # ... and the call's answer must not come back
    assert cache.get(key) is None
    cache.put(key, "ip_new", cache.epoch)
    assert cache.get(key) == "ip_new"


def test_no_entry_from_before_a_clear_comes_back_while_others_turn_the_cache_over() -> None:
    cache = TokenCache(64)
    keys = [cache.key(TokenType.IP, f"10.9.0.{n}") for n in range(200)]
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            began = cache.epoch
            cache.put(keys[n % len(keys)], f"ip_epoch{began}", began)  # tagged with its lookup's epoch
            cache.get(keys[(n * 7) % len(keys)])
            n += 1

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(300):
            cache.clear()
            now = cache.epoch
            for key in keys[::5]:
                token = cache.get(key)
                assert token is None or token == f"ip_epoch{now}", (token, now)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
