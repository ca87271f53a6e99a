"""Walk 47, W47-23: the owner's objects in the catalog paged only as TokenVaultDependencyDown ("database unreachable
... recovers by itself"). The catalog check's findings are a metric of their own now (alert VaultCatalogAltered)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from tests.unit.fakes import FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.entrypoints.metrics import _VaultCollector
from vault_service.service.keyring import KeyManager
from vault_service.service.maintenance import DATABASE, KeyMaintainer
from vault_service.service.ports import CatalogAdditions, TokenStore
from vault_service.service.token_cache import TokenCache


class _Catalog:
    def __init__(self) -> None:
        self.additions: tuple[str, ...] = ()

    def catalog_additions(self) -> tuple[str, ...]:
        return self.additions


def _findings() -> float:
    tokens: Any = SimpleNamespace(races=0, merged_batches=0)
    samples = {s.name: s.value for family in _VaultCollector(TokenCache(0), tokens).collect() for s in family.samples}
    return samples["tokenvault_database_catalog_findings"]


def test_the_catalog_check_s_findings_are_exported_while_they_stand() -> None:
    catalog = _Catalog()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    maintainer = KeyMaintainer(
        keys, cast(TokenStore, FakeTokenStore()), TokenCache(100), lambda dependency, ok: None, interval=3600,
        catalog=cast(CatalogAdditions, catalog),
    )  # fmt: skip
    maintainer.check()
    assert maintainer.healthy[DATABASE] and _findings() == 0
    catalog.additions = ("function pg_catalog.w47_probe()", "policy w47_pol on vault.tokens")
    maintainer.check()
    assert not maintainer.healthy[DATABASE] and _findings() == 2  # before: only tokenvault_dependency_up 0
    catalog.additions = ()
    maintainer.check()
    assert maintainer.healthy[DATABASE] and _findings() == 0  # removed: the alert stops
