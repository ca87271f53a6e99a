"""The erased-token set learns only from erase rows that hold in the audit chain (attack 44, A44-3).

A REVEAL row names hash(T) under the same keyed hasher an erase row does. The database owner relabelled one as an
erase row (`action = 'erase'`, row hash untouched) for one key-check round and put it back: every replica then
refused the live, never-erased token T as DATA_LOSS until restarted, and `audit verify` read the log intact. Each
erase row read is now checked as the audit upkeep checks the rows it anchors: its row hash recomputed from its
fields, the row after it linked to it. A row that fails is not learned, logged by id, counted
(`tokenvault_erase_rows_unverified_total`); `audit verify` names it while it stands. A row that holds (one the
owner inserted through the chain trigger) is handed to the upkeep's check: removed before the checkpoint, the
exported checkpoint names it. Real OpenBao and PostgreSQL, a database of each test's own.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, audit_verify, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import ItemError, Revealed
from vault_service.adapters.postgres.audit_records import RECORD_COLUMNS, audit_record, record_cursor
from vault_service.domain.audit import AuditRecord, chain_hash_v2
from vault_service.service.erased_tokens import erase_rows_unverified

__all__ = ["own_database"]

_NEWEST_REVEAL = (
    "SELECT id, action, outcome FROM vault.audit_log WHERE cardinality(revealed) > 0 AND action <> 'erase'"
    " ORDER BY id {} LIMIT 1"
)


def _relabel(env: dict[str, str], which: str = "DESC") -> tuple[int, str, str]:
    """The owner relabels a reveal row (the newest, or the oldest) as a served erase row; its (id, action, outcome)."""
    with as_owner(env) as owner:
        row_id, action, outcome = owner.execute(_NEWEST_REVEAL.format(which)).fetchone() or (0, "", "")
        owner.execute("UPDATE vault.audit_log SET action = 'erase', outcome = 'ok:1' WHERE id = %s", (row_id,))
    return row_id, action, outcome


def _put_back(env: dict[str, str], row_id: int, action: str, outcome: str, row_hash: bytes | None = None) -> None:
    with as_owner(env) as owner:
        owner.execute("UPDATE vault.audit_log SET action = %s, outcome = %s WHERE id = %s", (action, outcome, row_id))
        if row_hash is not None:
            owner.execute("UPDATE vault.audit_log SET row_hash = %s WHERE id = %s", (row_hash, row_id))


def _still_served(env: dict[str, str], replica: object, ip: str, token: str) -> None:
    again = _tokenize(env, replica, ip)  # type: ignore[arg-type]
    assert again == token, f"the live token was refused: {again}"  # before: DATA_LOSS "erased token is present again"
    assert isinstance(_reveal(env, replica, token), Revealed)  # type: ignore[arg-type]


def test_a_reveal_row_relabelled_as_an_erase_row_for_one_round_is_not_learned(own_database: dict[str, str]) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as replica:
        token = _tokenize(own_database, replica, ip)
        assert isinstance(token, str)
        assert isinstance(_reveal(own_database, replica, token), Revealed)  # its audit row names hash(token)
        before = erase_rows_unverified()
        row_id, action, outcome = _relabel(own_database)
        replica.maintainer.check()  # one key-check round reads the "erase row"
        finding = audit_verify(replica, None).finding
        assert finding is not None and finding.first_row == row_id, finding  # while it stands, verify names it
        _put_back(own_database, row_id, action, outcome)
        assert len(replica.wired.vault.erased) == 0  # before: hash(token) learned, for good
        assert erase_rows_unverified() == before + 1  # counted once (tokenvault_erase_rows_unverified_total)
        replica.maintainer.check()  # the row reads as a reveal again: nothing learned, nothing counted again
        assert erase_rows_unverified() == before + 1
        _still_served(own_database, replica, ip, token)


def test_a_relabelled_row_with_its_hash_rewritten_does_not_link_and_is_not_learned(
    own_database: dict[str, str],
) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as replica:
        token = _tokenize(own_database, replica, ip)
        assert isinstance(token, str)
        for _ in range(2):  # the first reveal row is relabelled; the second follows it in the chain
            assert isinstance(_reveal(own_database, replica, token), Revealed)
        row_id, action, outcome = _relabel(own_database, "ASC")
        with as_owner(own_database) as owner:  # the row's hash made that of its new fields (SHA-256, no key)
            read = record_cursor(owner).execute(
                f"SELECT {RECORD_COLUMNS} FROM vault.audit_log WHERE id = %s", (row_id,)
            )
            found = read.fetchone()
            assert found is not None
            record: AuditRecord = audit_record(found)
            kept = record.row_hash
            rehashed = chain_hash_v2(record.prev_hash, row_id, record.at, record.event, record.revealed_sent)
            owner.execute("UPDATE vault.audit_log SET row_hash = %s WHERE id = %s", (rehashed, row_id))
        before = erase_rows_unverified()
        replica.maintainer.check()
        _put_back(own_database, row_id, action, outcome, kept)
        assert len(replica.wired.vault.erased) == 0  # before: learned (its hash checked alone would pass)
        assert erase_rows_unverified() == before + 1
        _still_served(own_database, replica, ip, token)


_PLANT = (  # through the chain trigger (session_replication_role back to origin): a row that hashes and links
    "INSERT INTO vault.audit_log (client, action, purpose, token_types, item_count, outcome, revealed)"
    " SELECT 'privacy-officer', 'erase', 'GDPR-2026-4443', 'ip', 1, 'ok:1', revealed FROM vault.audit_log"
    " WHERE id = %s RETURNING id"
)


def test_an_erase_row_planted_at_the_head_and_removed_before_the_checkpoint_is_named_by_verify(
    own_database: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = tmp_path / "checkpoints.jsonl"
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    anchoring = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "300", "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported)}
    with running_vault(own_database, **anchoring) as replica:  # no upkeep round until it stops
        token = _tokenize(own_database, replica, ip)
        assert isinstance(token, str)
        assert isinstance(_reveal(own_database, replica, token), Revealed)
        with as_owner(own_database) as owner:
            reveal_id, _, _ = owner.execute(_NEWEST_REVEAL.format("DESC")).fetchone() or (0, "", "")
            owner.execute("SET session_replication_role = origin")
            (planted,) = owner.execute(_PLANT, (reveal_id,)).fetchone() or (0,)
        replica.maintainer.check()  # it holds in the chain: learned (the owner can add rows, not hide them)
        refused = _tokenize(own_database, replica, ip)
        assert isinstance(refused, ItemError) and refused.code == grpc.StatusCode.DATA_LOSS, refused
        with as_owner(own_database) as owner:  # removed at the tail before any checkpoint, the sequence rewound
            owner.execute("BEGIN")
            owner.execute("LOCK TABLE vault.audit_log IN EXCLUSIVE MODE")
            owner.execute("DELETE FROM vault.audit_log WHERE id = %s", (planted,))
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s - 1)", (planted,))
            owner.execute("COMMIT")
    code, printed = run_audit_verify(own_database, exported, monkeypatch)  # the stop's last round exported
    assert code == 1 and "TAMPERED" in printed and str(planted) in printed, printed  # before: exit 0, intact
