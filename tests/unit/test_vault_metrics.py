"""The vault's own metrics: cache lookups and size, insert races, merged batches, audit anchoring, reveal budgets."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from vault_service.adapters.postgres import prepared
from vault_service.domain.policy import parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.entrypoints.metrics import (
    _VaultCollector,
    count_revealed,
    export_reveal_budgets,
    observe_checkpoint_exported,
    observe_planted_checkpoint,
)
from vault_service.service import vault_base as vault_module
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


def test_a_replaced_prepared_statement_is_counted_when_scraped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count as it stands at each scrape, from the count the statements keep (not a copy made before)."""
    monkeypatch.setattr(prepared, "_replaced", 0)
    collector = _VaultCollector(TokenCache(10), cast(Any, SimpleNamespace(races=0, merged_batches=0)))
    assert _samples(collector)["tokenvault_prepared_statements_replaced_total"] == 0
    prepared._count_replaced()
    prepared._count_replaced()
    assert _samples(collector)["tokenvault_prepared_statements_replaced_total"] == 2
    prepared._count_replaced()
    assert _samples(collector)["tokenvault_prepared_statements_replaced_total"] == 3


def test_audit_anchoring_shows_as_the_time_of_the_last_exported_checkpoint_and_a_count_of_planted_ones() -> None:
    # The names the shipped alerts (AuditAnchoringStopped, AuditCheckpointPlanted) read.
    planted_before = REGISTRY.get_sample_value("tokenvault_audit_checkpoint_planted_total") or 0.0
    before = time.time()
    observe_checkpoint_exported(object())
    observe_planted_checkpoint()
    exported_at = REGISTRY.get_sample_value("tokenvault_audit_checkpoint_exported_timestamp_seconds")
    assert exported_at is not None and before <= exported_at <= time.time()
    assert REGISTRY.get_sample_value("tokenvault_audit_checkpoint_planted_total") == planted_before + 1


def test_withheld_purposes_are_one_count_without_a_label(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = _VaultCollector(TokenCache(10), cast(Any, SimpleNamespace(races=0, merged_batches=0)))
    monkeypatch.setattr(vault_module, "_withheld", 0)
    vault_module._count_withheld()
    family = next(f for f in collector.collect() if f.name == "tokenvault_purposes_withheld")
    assert [(sample.name, sample.labels, sample.value) for sample in family.samples] == [
        ("tokenvault_purposes_withheld_total", {}, 1)
    ]


def _budgets() -> dict[str, float]:
    family = next(f for f in REGISTRY.collect() if f.name == "tokenvault_client_reveal_budget_per_hour")
    return {sample.labels["client"]: sample.value for sample in family.samples}


def test_each_revealing_client_s_hourly_budget_is_exported_from_the_policy() -> None:
    """What RevealVolumeHigh compares a client's reveals with: its own rate, or the defaults', per hour."""
    policy = parse_policy(
        {
            "defaults": {"limits": {"detokenize_per_second": 2, "detokenize_burst": 50}},
            "clients": {
                "analyst": {"detokenize": {"ip": "plain"}, "limits": {"detokenize_per_second": 200}},
                "contractor": {"detokenize": {"device_id": "masked"}},
                "etl-service": {"tokenize": ["ip"]},
                "blind": {"detokenize": {"ip": "none"}},
            },
        }
    )
    export_reveal_budgets(policy)
    assert _budgets() == {"analyst": 720_000, "contractor": 7_200}  # who may see nothing has no budget to watch
    export_reveal_budgets(parse_policy({"clients": {"contractor": {"detokenize": {"ip": "masked"}}}}))
    assert _budgets() == {"contractor": 36_000}  # the built-in default (10/s); the analyst is gone with its policy


def test_each_revealing_client_s_reveal_series_exists_at_0_before_its_first_call() -> None:
    """Prometheus' increase() takes a new series' first sample as its start: a series born with a client's
    first call would never count that call (a burst of up to its detokenize_burst) after each start (R23-6)."""
    revealed = "tokenvault_detokenize_values_revealed_total"
    clients = {"unit-newcomer": {"detokenize": {"ip": "plain"}}, "unit-blind": {"detokenize": {"ip": "none"}}}
    export_reveal_budgets(parse_policy({"clients": clients}))
    assert REGISTRY.get_sample_value(revealed, {"client": "unit-newcomer"}) == 0.0
    assert REGISTRY.get_sample_value(revealed, {"client": "unit-blind"}) is None


def test_a_call_s_revealed_values_are_counted_for_its_client_and_none_is_nothing() -> None:
    def revealed(client: str) -> float:
        return REGISTRY.get_sample_value("tokenvault_detokenize_values_revealed_total", {"client": client}) or 0.0

    before = revealed("unit-analyst")
    count_revealed("unit-analyst", 998)
    count_revealed("unit-analyst", 2)
    count_revealed("unit-nobody", 0)
    assert revealed("unit-analyst") == before + 1000
    assert REGISTRY.get_sample_value("tokenvault_detokenize_values_revealed_total", {"client": "unit-nobody"}) is None
