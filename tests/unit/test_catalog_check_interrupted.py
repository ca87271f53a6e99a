"""A48-1: a catalog check cancelled or timed out on every try is an outage, never a finding (fakes for the server).

The integration test (tests/integration/test_a48_catalog_check_cancelled.py) cancels real checks from a sibling
session; a cancel on every try is timing there, so the retries' end is pinned here with a connection that answers
every try with the server's error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.unit.fakes import FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.adapters.postgres import catalog_additions
from vault_service.adapters.postgres.catalog_additions import read_checked
from vault_service.domain.errors import CatalogCheckInterrupted, CatalogUnread
from vault_service.service import maintenance
from vault_service.service.keyring import KeyManager
from vault_service.service.maintenance import DATABASE, CatalogUnchecked, KeyMaintainer
from vault_service.service.ports import CatalogAdditions, TokenStore
from vault_service.service.token_cache import TokenCache


class _Refusing:
    """A pool whose connection answers every statement with `error` (a live database's ERROR, the session kept)."""

    closed = False
    broken = False

    def __init__(self, error: psycopg.Error) -> None:
        self.error = error
        self.tries = 0

    @contextmanager
    def connection(self) -> Iterator[_Refusing]:
        yield self

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def execute(self, *_: Any) -> Any:
        if "search_path" in str(_[0]):
            return None
        self.tries += 1
        raise self.error


def test_a_check_cancelled_on_every_try_is_retried_counted_and_said_to_be_no_finding() -> None:
    pool = _Refusing(psycopg.errors.QueryCanceled("canceling statement due to user request"))
    counted: list[str] = []
    with pytest.raises(CatalogCheckInterrupted) as raised:
        read_checked(cast(ConnectionPool, pool), filters=True, on_interrupted=counted.append, pauses=(0.0, 0.0, 0.0))
    assert pool.tries == 4 and counted == ["query_canceled"] * 4
    said = str(raised.value)
    assert said.startswith("the catalog check could not complete: its query was cancelled or timed out on each of 4")
    assert "SQLSTATE 57014" in said and "not a finding" in said and "cannot read the catalog" not in said


def test_a_lock_timeout_is_an_interruption_too_and_a_refusal_stays_a_finding() -> None:
    counted: list[str] = []
    with pytest.raises(CatalogCheckInterrupted):
        read_checked(
            cast(ConnectionPool, _Refusing(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"))),
            filters=True,
            on_interrupted=counted.append,
            pauses=(0.0,),
        )
    assert counted == ["lock_not_available"] * 2
    refused = _Refusing(psycopg.errors.InsufficientPrivilege("permission denied for table pg_cast"))
    with pytest.raises(CatalogUnread) as raised:  # R40-2 holds: a catalog it may not read is a finding, not retried
        read_checked(cast(ConnectionPool, refused), filters=True, on_interrupted=counted.append, pauses=(0.0,))
    assert refused.tries == 1 and counted == ["lock_not_available"] * 2
    assert str(raised.value).startswith("cannot read the catalog to check it")


class _Interrupted:
    """A catalog check whose every try was cancelled (CatalogCheckInterrupted), `tries` counted."""

    def __init__(self) -> None:
        self.tries = 0

    def catalog_additions(self) -> tuple[str, ...]:
        self.tries += 1
        raise CatalogCheckInterrupted("the catalog check could not complete: its query was cancelled (test)")


def _maintainer(catalog: object) -> KeyMaintainer:
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    return KeyMaintainer(
        keys,
        cast(TokenStore, FakeTokenStore()),
        TokenCache(100),
        lambda dependency, ok: None,
        interval=3600,
        catalog=cast(CatalogAdditions, catalog),
    )


def test_a_start_checks_again_then_refuses_saying_the_check_could_not_run_and_a_round_reports_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(maintenance, "START_CHECK_PAUSES", (0.0, 0.0))
    catalog = _Interrupted()
    with pytest.raises(CatalogUnchecked) as raised:  # not CatalogUnreadable: no "catalog altered"
        _maintainer(catalog).start()
    assert catalog.tries == 3
    assert str(raised.value) == (
        "cannot check the database's catalog before serving: the catalog check could not complete: its query was"
        " cancelled (test)"
    )
    running = _maintainer(catalog)
    running.check()
    assert not running.healthy[DATABASE]
    assert running._causes[DATABASE].startswith("the catalog check could not complete")


def test_the_adapter_reads_the_interrupting_states_by_name() -> None:
    assert catalog_additions.INTERRUPTED == {"57014": "query_canceled", "55P03": "lock_not_available"}
