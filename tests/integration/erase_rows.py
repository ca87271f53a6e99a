"""The owner's hand on the audit log's erase rows, and the signed checkpoints that commit to them (attack 46).

Shared by the erase-row commitment tests (test_erase_commitment*.py, test_erase_rows_at_start.py,
test_half_filled_checkpoint.py, test_planted_erase_checkpoint.py): how fast a replica signs, waiting until it has,
the newest committed head, and the database owner relabelling a row (its hash recomputed, the chain re-linked) and
putting it back.
"""

from __future__ import annotations

import dataclasses
import time

from tests.conftest import RunningVault
from tests.integration.audit_attacks import as_owner, erase
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.adapters.postgres.audit_records import RECORD_COLUMNS, audit_record, record_cursor
from vault_service.domain.audit import AuditRecord, record_hash

FAST = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1"}
"""A checkpoint signed every second."""
UNANCHORED = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "300"}
"""No checkpoint within the test: the rows stay in the unanchored tail (no erase-row commitment covers them)."""


def wait_anchored(vault: object, head: int, seconds: float = 8.0) -> None:
    """Wait until the in-process replica `vault` has verified a signed checkpoint at `head` or above."""
    erased = vault.wired.vault.erased  # type: ignore[attr-defined]
    deadline = time.monotonic() + seconds
    while (erased._anchored or 0) < head:
        assert time.monotonic() < deadline, f"no checkpoint anchored at {head} (at {erased._anchored})"
        time.sleep(0.05)


def newest_row(env: dict[str, str]) -> int:
    """The audit log's newest row id (0 when empty)."""
    with as_owner(env) as owner:
        (newest,) = owner.execute("SELECT max(id) FROM vault.audit_log").fetchone() or (0,)
    return int(newest)


def rows_from(env: dict[str, str], first_id: int) -> list[AuditRecord]:
    """The audit rows from `first_id` on, as stored."""
    with as_owner(env) as owner:
        found = (
            record_cursor(owner)
            .execute(f"SELECT {RECORD_COLUMNS} FROM vault.audit_log WHERE id >= %s ORDER BY id", (first_id,))
            .fetchall()
        )
    return [audit_record(row) for row in found]


def relabel(env: dict[str, str], row_id: int, action: str, rechain_to_head: bool) -> list[AuditRecord]:
    """The owner's relabelling of row `row_id` as `action`, its hash recomputed, the next row (or every row after it,
    `rechain_to_head`) re-linked and re-hashed so the chain holds where a replica looks; the rows as they were."""
    before = rows_from(env, row_id)
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


def put_back(env: dict[str, str], rows: list[AuditRecord]) -> None:
    """The rows `relabel` returned written back as they were."""
    with as_owner(env) as owner:
        for record in rows:
            owner.execute(
                "UPDATE vault.audit_log SET action = %s, prev_hash = %s, row_hash = %s WHERE id = %s",
                (record.event.action, record.prev_hash, record.row_hash, record.record_id),
            )


def committed_head(env: dict[str, str]) -> tuple[int, int]:
    """The newest checkpoint committing to the erase rows: (head, erase rows it counts); (0, -1) none."""
    with as_owner(env) as owner:
        row = owner.execute(
            "SELECT head_id, erase_count FROM vault.audit_checkpoints WHERE erase_count IS NOT NULL"
            " ORDER BY head_id DESC LIMIT 1"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, -1)


def erased_new_token(env: dict[str, str], vault: RunningVault, purpose: str) -> tuple[str, int]:
    """A new ip value's token, erased by the privacy officer through `vault`: (the token, its erase row's id)."""
    token = _tokenize(env, vault, fresh_value(vault_pb2.TOKEN_TYPE_IP))
    assert isinstance(token, str), token
    assert erase(env, vault, [token], purpose) == [None]
    with as_owner(env) as owner:
        (erase_id,) = owner.execute(
            "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
        ).fetchone() or (0,)
    return token, int(erase_id)
