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

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erase_rows_at_start import FAST, _head, _wait_anchored
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.adapters.postgres.audit_records import RECORD_COLUMNS, audit_record, record_cursor
from vault_service.domain.audit import AuditRecord, record_hash
from vault_service.entrypoints.metrics import _VaultCollector
from vault_service.service import erased_tokens
from vault_service.service.maintenance import DATABASE, EraseRowsUncommitted
from vault_service.service.token_cache import TokenCache

__all__ = ["own_database"]


def _rows_from(env: dict[str, str], first_id: int) -> list[AuditRecord]:
    with as_owner(env) as owner:
        found = (
            record_cursor(owner)
            .execute(f"SELECT {RECORD_COLUMNS} FROM vault.audit_log WHERE id >= %s ORDER BY id", (first_id,))
            .fetchall()
        )
    return [audit_record(row) for row in found]


def _relabel(env: dict[str, str], row_id: int, action: str, rechain_to_head: bool) -> list[AuditRecord]:
    """The owner's relabelling of row `row_id` as `action`, its hash recomputed, the next row (or every row after it,
    `rechain_to_head`) re-linked and re-hashed so the chain holds where a replica looks; the rows as they were."""
    before = _rows_from(env, row_id)
    previous = b""
    changed = []
    for index, record in enumerate(before):
        if index == 0:
            record = dataclasses.replace(record, event=dataclasses.replace(record.event, action=action))
        else:
            record = dataclasses.replace(record, prev_hash=previous)
        record = dataclasses.replace(record, row_hash=record_hash(record))
        changed.append(record)
        previous = record.row_hash
        if index == 1 and not rechain_to_head:
            break
    with as_owner(env) as owner:
        for record in changed:
            owner.execute(
                "UPDATE vault.audit_log SET action = %s, prev_hash = %s, row_hash = %s WHERE id = %s",
                (record.event.action, record.prev_hash, record.row_hash, record.record_id),
            )
    return before


def _put_back(env: dict[str, str], rows: list[AuditRecord]) -> None:
    with as_owner(env) as owner:
        for record in rows:
            owner.execute(
                "UPDATE vault.audit_log SET action = %s, prev_hash = %s, row_hash = %s WHERE id = %s",
                (record.event.action, record.prev_hash, record.row_hash, record.record_id),
            )


def _committed_head(env: dict[str, str]) -> tuple[int, int]:
    """The newest checkpoint committing to the erase rows: (head, erase rows it counts); (0, -1) none."""
    with as_owner(env) as owner:
        row = owner.execute(
            "SELECT head_id, erase_count FROM vault.audit_checkpoints WHERE erase_count IS NOT NULL"
            " ORDER BY head_id DESC LIMIT 1"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, -1)


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
        _wait_anchored(first, _head(env))
    head, erasures = _committed_head(env)
    assert head > erase_id and erasures == 1, (head, erasures, erase_id)  # the upkeep committed to E (v2)
    rows = _relabel(env, int(erase_id), "reveal", rechain_to_head=True)  # E hidden; the chain holds to the head
    try:
        with pytest.raises(EraseRowsUncommitted) as refused, running_vault(env, **FAST):  # old code: B started
            pass
        code, printed = run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)
    finally:
        _put_back(env, rows)
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
        _wait_anchored(first, _head(env))
        assert _committed_head(env)[0] > reveal_id
        rows = _relabel(env, int(reveal_id), "erase", rechain_to_head=False)  # A46-3's: the next row relinked
        try:
            with pytest.raises(EraseRowsUncommitted) as refused, running_vault(env, **FAST):  # old code: B started
                pass
        finally:
            _put_back(env, rows)
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
        _wait_anchored(replica, _head(env))
        assert _committed_head(env)[0] > reveal_id
        found_before = _exported("tokenvault_erase_rows_uncommitted_found_total")
        rows = _relabel(env, int(reveal_id), "erase", rechain_to_head=False)
        try:
            replica.maintainer.check()
            unhealthy = not replica.maintainer.healthy[DATABASE]
            cause = replica.maintainer._causes.get(DATABASE, "")
            standing = _exported("tokenvault_erase_rows_uncommitted")
        finally:
            _put_back(env, rows)
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
        head = _head(env)
        _wait_anchored(first, head)
        _wait_anchored(second, head)  # B's upkeep walked E genuine: its reads may start past E
        assert _committed_head(env)[0] >= head > erase_id
        rows = _relabel(env, int(erase_id), "reveal", rechain_to_head=True)
        try:
            second.maintainer.check()  # B's read misses E; its check meets a checkpoint committing to it
            unhealthy = not second.maintainer.healthy[DATABASE]
        finally:
            _put_back(env, rows)
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
