"""A checkpoint whose erase-row commitment is half NULL is a finding, not a v1 checkpoint (review 47, R47-3).

Migration 0070's CHECK lets (erase_count set, erase_digest NULL) pass. The database owner set erase_count on a
genuine v1 checkpoint newer than every v2 one: it was picked as "the newest committed" yet read as v1, its v1
signature held, and the start and running checks compared nothing - an erase row relabelled meanwhile went unseen.
Now a half pair reads as a commitment no signature covers: passed over (logged, counted as planted) for the newest
genuine v2 checkpoint, which catches the relabel; `audit verify` names its bad signature.

Real OpenBao (the Transit key signs the v1 checkpoint) and PostgreSQL, in-process replicas.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, own_database, run_audit_verify
from tests.integration.erase_rows import (
    FAST,
    UNANCHORED,
    committed_head,
    erased_new_token,
    newest_row,
    put_back,
    relabel,
    wait_anchored,
)
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.domain.checkpoints import ChainHead
from vault_service.service.maintenance import EraseRowsUncommitted

__all__ = ["own_database"]


def test_a_v1_checkpoint_given_half_a_commitment_is_passed_over_and_named(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = own_database
    with running_vault(env, **FAST) as first:
        _token, erase_id = erased_new_token(env, first, "GDPR-2026-4703")
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env))
    committed, erasures = committed_head(env)
    assert committed > erase_id and erasures == 1, (committed, erasures, erase_id)
    with running_vault(env, **UNANCHORED) as signing:
        _tokenize(env, signing, fresh_value(vault_pb2.TOKEN_TYPE_IP))
    signer = signing.wired.signer  # OpenBao's Transit key, as the admin commands' one-round checkpoints sign v1
    with as_owner(env) as owner:  # the newest checkpoint made a genuine v1 one, erase_count set, erase_digest NULL
        stored = owner.execute(
            "SELECT head_id, head_hash, row_count, at FROM vault.audit_checkpoints ORDER BY head_id DESC LIMIT 1"
        ).fetchone()
        assert stored is not None
        head = ChainHead(int(stored[0]), bytes(stored[1]), int(stored[2]), stored[3])
        owner.execute(  # 0070's CHECK lets (0, NULL) pass
            "UPDATE vault.audit_checkpoints SET signature = %s, erase_count = 0, erase_digest = NULL"
            " WHERE head_id = %s",
            (signer.sign(head.message()), head.head_id),
        )
        newest_v2 = owner.execute(
            "SELECT max(head_id) FROM vault.audit_checkpoints WHERE erase_digest IS NOT NULL"
        ).fetchone() or (0,)
    committed = int(newest_v2[0])
    assert erase_id < committed < head.head_id, (erase_id, committed, head.head_id)
    code, printed = run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)
    assert code != 0  # old code: verified (the v1 signature holds)
    assert f"checkpoint at row {head.head_id} has a bad signature" in printed, printed[-2000:]
    rows = relabel(env, int(erase_id), "reveal", rechain_to_head=True)  # E hidden; the chain holds to the head
    try:
        with pytest.raises(EraseRowsUncommitted) as refused, running_vault(env, **UNANCHORED):  # old code: started
            pass
    finally:
        put_back(env, rows)
    assert f"erase rows up to row {committed} are not those its signed checkpoint commits to" in str(refused.value)
