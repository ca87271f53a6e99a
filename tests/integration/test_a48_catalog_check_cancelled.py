"""Attack 48, A48-1: a sibling session of the vault's own database role cancelling the catalog check is an outage.

Any session of a role may cancel (`pg_cancel_backend`) the queries of every other session of that role: whoever holds
the service's login can cancel the ~2 ms catalog check. Before the fix, a cancelled check (SQLSTATE 57014) counted as
a catalog the check cannot read - a finding: the running replica went NOT_SERVING with "cannot read the catalog ...
report it to the security team", a starting one refused to start as on an altered catalog, `audit verify` said
"audit log NOT verified". Now a cancelled try is retried, counted (tokenvault_catalog_check_interrupted) and logged
at WARNING: never a finding, and a starting replica starts (or, cancelled on every try, says the check could not
complete: CatalogUnchecked, never CatalogUnreadable).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from tests.conftest import running_vault
from tests.integration.audit_attacks import own_database, run_audit_verify
from vault_service.adapters.postgres.catalog_additions import PostgresCatalogAdditions
from vault_service.domain.errors import CatalogCheckInterrupted
from vault_service.entrypoints.metrics import observe_catalog_check_interrupted
from vault_service.service.maintenance import CatalogAltered, CatalogUnchecked, KeyMaintainer

__all__ = ["own_database"]

CANCEL_THE_CHECK = (  # run as the vault's own role: its sessions' queries are its to cancel
    "SELECT count(pg_catalog.pg_cancel_backend(a.pid)) FROM pg_catalog.pg_stat_activity a"
    " WHERE a.usename = current_user AND a.pid <> pg_catalog.pg_backend_pid() AND a.state = 'active'"
    " AND a.query LIKE 'WITH system_schemas%'"
)
UNREAD = "cannot read the catalog to check it"
INTERRUPTED = "the catalog check could not complete: its query was cancelled or timed out"


@contextmanager
def cancelling(dsn: str) -> Iterator[list[int]]:
    """A session of the vault's role cancelling every catalog check it sees running, until the block ends."""
    done = threading.Event()
    hits = [0]

    def loop() -> None:
        with psycopg.connect(dsn, autocommit=True) as sibling:
            while not done.is_set():
                row = sibling.execute(CANCEL_THE_CHECK).fetchone()
                hits[0] += int(row[0]) if row else 0

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield hits
    finally:
        done.set()
        thread.join(10)


def _cancelled_tries() -> float:
    return REGISTRY.get_sample_value("tokenvault_catalog_check_interrupted_total", {"reason": "query_canceled"}) or 0.0


def test_a48_cancelled_catalog_checks_are_retried_and_counted_never_a_finding_nor_a_refused_start(
    own_database: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    dsn = own_database["PG_VAULT_DSN"]
    counted_before = _cancelled_tries()
    with running_vault(own_database) as replica:
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]
        with cancelling(dsn) as hits, caplog.at_level(logging.WARNING):
            for _ in range(400):
                replica.maintainer.check()
                if _cancelled_tries() > counted_before:
                    break
            assert hits[0] >= 1
            assert _cancelled_tries() > counted_before  # the metric counts each cancelled try
            causes = replica.maintainer._causes.get("database", "")
            assert replica.maintainer.healthy["database"] or causes.startswith(INTERRUPTED), causes
            wired = replica.wired
            started = cancelled_starts = 0
            for _ in range(60):  # a starting replica (as the service's start) starts, or says it could not check
                tries_before = _cancelled_tries()
                starting = KeyMaintainer(
                    wired.keys, wired.token_store, wired.vault.cache, lambda *_: None, 3600.0, wired.vault.erased,
                    PostgresCatalogAdditions(wired.pool, observe_catalog_check_interrupted),
                )  # fmt: skip
                try:
                    starting.start()
                    started += 1
                except CatalogUnchecked as error:
                    assert INTERRUPTED in str(error), str(error)
                except CatalogAltered as error:  # CatalogUnreadable: the false "catalog altered" of A48-1
                    pytest.fail(f"a cancelled catalog check refused a start as a finding: {error}")
                starting.stop()
                cancelled_starts += _cancelled_tries() > tries_before
                if started >= 1 and cancelled_starts >= 3:  # starts whose check was cancelled: each refused before
                    break
            assert started >= 1 and cancelled_starts >= 1, (started, cancelled_starts)
        lines = [r.getMessage() for r in caplog.records]
        assert not any(UNREAD in line for line in lines), lines  # no tampering ERROR with nothing tampered
        warned = [r for r in caplog.records if "catalog check's query was cancelled" in r.getMessage()]
        assert warned and all(r.levelno == logging.WARNING for r in warned)
        assert all(getattr(r, "sqlstate", None) == "57014" for r in warned)
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]


def test_a48_a_cancelled_check_is_no_finding_of_audit_verify(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`audit verify` (the security team's scheduled check) under the same cancels: verified, or the check could not
    complete (and why) - never "audit log NOT verified" naming the cancel as a schema change."""
    exported = Path(own_database["TOKENVAULT_AUDIT_CHECKPOINT_FILE"])
    with running_vault(own_database) as replica:
        replica.wait_for_checkpoint()
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0, printed
    with cancelling(own_database["PG_VAULT_DSN"]) as hits:
        for _ in range(40):
            if hits[0] >= 3:  # a few checks cancelled and retried are enough
                break
            try:
                code, printed = run_audit_verify(own_database, exported, monkeypatch)
            except CatalogCheckInterrupted as error:  # every try cancelled: said so, not a finding
                assert str(error).startswith(INTERRUPTED), str(error)
                continue
            flat = " ".join(printed.split())
            assert code == 0 and UNREAD not in flat, printed
    assert hits[0] >= 1
