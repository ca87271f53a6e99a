"""The signed checkpoints' commitment to the erase rows, against attack 46's relabelled `action` (A46-1, A46-3).

A starting replica learns the erased tokens from the rows whose `action` is 'erase'. The database owner relabelled
such a row's action while a replica started (its row hash recomputed, the rows after it re-chained): the erasure
hidden, the erased token handed out after A43-3's write-back (A46-1's `action` variant); or relabelled a reveal row
as an erase row: a live token refused until restart (A46-3). Now every checkpoint the upkeep signs commits to the
erase rows up to its head (count, running SHA-256 over id and row hash), and a replica checks what it reads against
the newest: it refuses to start, or reports its database unhealthy, and `audit verify` names the mismatch.

Real OpenBao and PostgreSQL, in-process replicas, a database of each test's own.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database, run_audit_verify
from tests.integration.erase_rows import FAST, committed_head, newest_row, put_back, relabel, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.entrypoints.metrics import _VaultCollector
from vault_service.service import erased_tokens
from vault_service.service.maintenance import DATABASE, EraseRowsUncommitted
from vault_service.service.token_cache import TokenCache

__all__ = ["own_database"]


def test_a_genuine_erase_row_relabelled_while_a_replica_starts_refuses_the_start_and_verify_names_it(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        assert erase(env, first, [token], "GDPR-2026-4648") == [None]
        with as_owner(env) as owner:
            (erase_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
        _reveal(env, first, _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP)))  # type: ignore[arg-type]
        wait_anchored(first, newest_row(env))
    head, erasures = committed_head(env)
    assert head > erase_id and erasures == 1, (head, erasures, erase_id)  # the upkeep committed to E (v2)
    rows = relabel(env, int(erase_id), "reveal", rechain_to_head=True)  # E hidden; the chain holds to the head
    try:
        with pytest.raises(EraseRowsUncommitted) as refused, running_vault(env, **FAST):  # old code: B started
            pass
        code, printed = run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)
    finally:
        put_back(env, rows)
    assert f"erase rows up to row {head} are not those its signed checkpoint commits to" in str(refused.value)
    assert "0 erase row(s) where it signed 1" in str(refused.value)
    assert code != 0
    assert "0 erase row(s) where it signed 1" in printed, printed[-2000:]
    with running_vault(env, **FAST) as again:  # put back: it starts, and knows the erasure
        assert len(again.wired.vault.erased) == 1


def test_a_reveal_row_relabelled_as_an_erase_row_while_a_replica_starts_refuses_the_start(
    own_database: dict[str, str],
) -> None:
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        assert getattr(_reveal(env, first, token), "value", None) == ip  # row R names hash(T)
        with as_owner(env) as owner:
            (reveal_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE cardinality(revealed) = 1 AND action <> 'erase'"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env))
        assert committed_head(env)[0] > reveal_id
        rows = relabel(env, int(reveal_id), "erase", rechain_to_head=False)  # A46-3's: the next row relinked
        try:
            with pytest.raises(EraseRowsUncommitted) as refused, running_vault(env, **FAST):  # old code: B started
                pass
        finally:
            put_back(env, rows)
        assert "1 erase row(s) where it signed 0" in str(refused.value)
        assert getattr(_reveal(env, first, token), "value", None) == ip  # the live token, still revealed


def test_a_running_replica_reports_its_database_unhealthy_when_a_newer_checkpoint_does_not_match(
    own_database: dict[str, str],
) -> None:
    env = own_database
    with running_vault(env, **FAST) as replica:
        token = _tokenize(env, replica, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(token, str)
        replica.maintainer.check()
        assert replica.maintainer.healthy[DATABASE]
        _reveal(env, replica, token)
        with as_owner(env) as owner:
            (reveal_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE cardinality(revealed) = 1 ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
        _tokenize(env, replica, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(replica, newest_row(env))
        assert committed_head(env)[0] > reveal_id
        found_before = _exported("tokenvault_erase_rows_uncommitted_found_total")
        rows = relabel(env, int(reveal_id), "erase", rechain_to_head=False)
        try:
            replica.maintainer.check()
            unhealthy = not replica.maintainer.healthy[DATABASE]
            cause = replica.maintainer._causes.get(DATABASE, "")
            standing = _exported("tokenvault_erase_rows_uncommitted")
        finally:
            put_back(env, rows)
        replica.maintainer.check()
        healthy_again = replica.maintainer.healthy[DATABASE]
        refused_live = len(replica.wired.vault.erased)  # the relabelled reveal row's token, learned meanwhile
    assert unhealthy, "the replica kept its database healthy (old code: no check)"
    assert "1 erase row(s) where it signed 0" in cause, cause
    assert healthy_again
    assert standing == 1  # a metric of its own (R47-15; before: only tokenvault_dependency_up 0)
    assert _exported("tokenvault_erase_rows_uncommitted") == 0  # put back: the gauge clears...
    assert _exported("tokenvault_erase_rows_uncommitted_found_total") == found_before + 1  # ...the count stays
    assert refused_live == 0, "the live token stays taken for erased after the rows were put back (R47-1)"


def test_an_erase_row_hidden_from_a_running_replica_is_learned_once_the_rows_match_again(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 47, R47-1: replica B's read misses erase row E hidden (relabelled `reveal`, rechained) while its check
    sees A's newer genuine checkpoint committing to E; once E is put back the rows match and B is healthy again - and
    B's set must hold E's token, though B's learn window (OVERLAP_IDS 0 here) has moved past E."""
    monkeypatch.setattr(erased_tokens, "OVERLAP_IDS", 0)
    env = own_database
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as second, running_vault(env, **FAST) as first:
        token = _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(token, str)
        second.maintainer.check()  # B's window: up to the rows before E
        assert erase(env, first, [token], "GDPR-2026-4749") == [None]
        with as_owner(env) as owner:
            (erase_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))  # a row after E
        head = newest_row(env)
        wait_anchored(first, head)
        wait_anchored(second, head)  # B's upkeep walked E genuine: its reads may start past E
        assert committed_head(env)[0] >= head > erase_id
        rows = relabel(env, int(erase_id), "reveal", rechain_to_head=True)
        try:
            second.maintainer.check()  # B's read misses E; its check meets a checkpoint committing to it
            unhealthy = not second.maintainer.healthy[DATABASE]
        finally:
            put_back(env, rows)
        second.maintainer.check()
        healthy_again = second.maintainer.healthy[DATABASE]
        known = len(second.wired.vault.erased)
    assert unhealthy, "B's check did not see E hidden"
    assert healthy_again
    assert known == 1, "B is healthy again yet does not know the erasure it missed (old code: 0 for B's life)"


def _exported(sample: str) -> float:
    """A sample of the vault's metrics collector, as the metrics endpoint exports it."""
    tokens: Any = SimpleNamespace(races=0, merged_batches=0)
    found = {s.name: s.value for family in _VaultCollector(TokenCache(0), tokens).collect() for s in family.samples}
    return found[sample]
