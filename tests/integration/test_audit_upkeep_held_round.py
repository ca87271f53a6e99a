"""A round the database owner holds is counted as failed and cut off, and the rows it checked stay remembered.

Attack 17, finding 2 (HIGH): the owner held the checkpoint INSERT with a table lock
(`LOCK TABLE vault.audit_checkpoints IN SHARE MODE`); the round had already checked the new
reveal's row and forgotten it, signed its head and waited forever, counted nowhere. The owner
rewrote the row into a refused call naming no token, re-hashed by the database's own function,
terminated the waiting backend and released the lock: audit-verify with the exported copy said
intact, and no log line named the row. Guarantee: a row is forgotten only once a checkpoint of the
head it was checked against is exported, so the rewrite is reported (the row named missing in the
exported checkpoint, audit-verify fails), and the held round is counted as failed.

Finding 3 (LOW): the server-side statement timeout is trapped by a function of the owner's
(a row-level-security policy catching `query_canceled`, looping): the round is timed in the
vault's process too, and past its limit counted as failed, logged with the unchecked ids, and
its connection closed at the socket, so the next round runs.

Real PostgreSQL (and, for finding 2, the vault serving over gRPC with OpenBao).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.conftest import running_vault
from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import (
    REWRITE_AS_REFUSED,
    held_segment_reads,
    own_database,
    segment_read_held,
    until,
)
from tests.integration.own_audit_log import audit_log_of_its_own
from tests.unit.fakes import FakeAuditLog
from vault_service.domain.checkpoints import Checkpoint
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.exported_copy import read_exported_copy
from vault_service.service.metering import RefusalAuditor, TokenizeMeter

__all__ = ["own_database"]

_FAILED = "tokenvault_audit_upkeep_failed_total"


def test_a_reveal_row_rewritten_while_the_checkpoint_insert_is_held_is_reported_and_the_hold_counted(
    own_database: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exported = tmp_path / "checkpoints.jsonl"
    env = own_database
    with running_vault(
        env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1", TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)
    ) as vault:
        token = attack.anchored_token(env, vault)
        failed = attack.counted(_FAILED)
        with (
            psycopg.connect(env["PG_ADMIN_DSN"]) as locker,
            attack.as_owner(env) as owner,
            caplog.at_level(logging.ERROR),
        ):
            locker.execute("LOCK TABLE vault.audit_checkpoints IN SHARE MODE")  # SELECTs pass, INSERTs wait
            assert attack.analyst_reveal(env, vault, token, "CASE-17002") == grpc.StatusCode.OK
            found = owner.execute("SELECT max(id) FROM vault.audit_log WHERE purpose = 'CASE-17002'").fetchone()
            assert found is not None
            row_id = int(found[0])
            held = (
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO vault.audit_checkpoints%'"
            )
            until("the vault's checkpoint INSERT waiting on the lock", 15, lambda: owner.execute(held).fetchall())
            until("the held round counted as failed", 15, lambda: attack.counted(_FAILED) > failed)
            for statement in REWRITE_AS_REFUSED:
                owner.execute(statement, {"id": row_id})
            for (pid,) in owner.execute(held).fetchall():
                owner.execute("SELECT pg_terminate_backend(%s)", (pid,))
            locker.rollback()  # the lock goes
            # Later traffic, anchored on top.
            assert attack.analyst_reveal(env, vault, token, "CASE-17010") == grpc.StatusCode.OK
            vault.wait_for_checkpoint()
            until("the rewritten row named in an exported checkpoint", 15, lambda: _names_missing(exported, row_id))
        assert "are not in the chain up to row" in caplog.text and f"(ids {row_id})" in caplog.text
        report = attack.audit_verify(vault, exported)
        assert report.finding is not None and report.finding.first_row == row_id, report.finding


def _names_missing(exported: Path, row_id: int) -> bool:
    return any(row_id in c.missing for c in read_exported_copy(exported).checkpoints) if exported.exists() else False


class _Signer:
    key_name = "k"

    def sign(self, data: bytes) -> str:
        return "sig:" + data.hex()


def test_a_round_held_by_a_function_trapping_the_statement_timeout_is_counted_failed_and_cut_off_in_bounds(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    interval = 0.5
    with audit_log_of_its_own(stack_env, "held_round", 2) as (log, owner_dsn):
        log.upkeep_statement_timeout = 5 * interval  # as the service sets it: trapped here
        failed, exported = list[float](), list[Checkpoint]()
        audit = FakeAuditLog()
        upkeep = AuditUpkeep(
            audit,
            log,
            _Signer(),
            TokenizeMeter(),
            RefusalAuditor(audit),
            exported.append,
            interval,
            on_failed=lambda: failed.append(time.monotonic()),
            appended=log.appended,
        )
        ids = sorted(log.appended.remembered())
        with psycopg.connect(owner_dsn, autocommit=True) as owner, caplog.at_level(logging.ERROR):
            with segment_read_held(owner):
                started = time.monotonic()
                upkeep.start()
                held = until("the segment read held", 10, lambda: held_segment_reads(owner))
                until("a failed round counted", 6 * interval + 5, lambda: failed)
                assert failed[0] - started < 6 * interval + 3, "the held round was not counted within its bound"
                assert "audit upkeep round failed: held for" in caplog.text
                named = f"2 audit row(s) this service appended (ids {ids[0]} to {ids[-1]}) wait unchecked"
                assert named in caplog.text
                assert sorted(log.appended.remembered()) == ids  # still remembered: the bound and stop() name them
                # The server's own check for a client gone ends the severed statement (it would not commit late).
                until("the severed statement ended on the server", 5, lambda: not held & held_segment_reads(owner))
            until("the rows checked once the hold is gone", 10, lambda: len(log.appended) == 0)
            upkeep.stop()
        assert exported and exported[-1].head.head_id >= ids[-1]
