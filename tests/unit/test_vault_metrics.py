"""The vault's own metrics: cache lookups and size, insert races and merged batches, read at scrape time."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from vault_service.domain.token_types import TokenType
from vault_service.entrypoints.metrics import _VaultCollector
from vault_service.service.token_cache import TokenCache


def _samples(collector: _VaultCollector) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}


def test_the_collector_reports_what_the_cache_and_the_store_count_when_scraped() -> None:
    cache = TokenCache(10)
    store = SimpleNamespace(races=0, merged_batches=0)
    collector = _VaultCollector(cache, cast(Any, store))
    key = cache.key(TokenType.IP, "10.0.0.1")
    cache.get(key)
    cache.put(key, "ip_" + "a" * 22, cache.epoch)
    cache.get(key)
    store.races, store.merged_batches = 3, 1
    samples = _samples(collector)
    assert samples["tokenvault_token_cache_entries"] == 1
    assert samples["tokenvault_token_insert_races_total"] == 3
    assert samples["tokenvault_token_insert_merged_batches_total"] == 1
    store.merged_batches = 2
    assert _samples(collector)["tokenvault_token_insert_merged_batches_total"] == 2
