"""A replica killed during its round has named the rows it had not anchored, so their rewrite is reported.

Retest 17, finding A (HIGH): the database owner sent the upkeep's segment read a NOTICE of 320 MB
(a row-level-security policy's function) and the replica went past its 1 GiB limit, OOM-killed 4.8 s
after a reveal, before the checkpoint anchoring the reveal's row was exported and before any log
line named it. The owner rewrote the row into a refused call naming no token (re-hashed by the
database's function): `audit verify --exported` said intact. A message of that size can still be
sent (an error; docs/threat-model.md), so each round now first exports a note of the rows not yet
anchored (ids, a digest over id and row hash), and verification requires them as appended.

Real PostgreSQL and OpenBao: the vault serves in a process of its own, killed (SIGKILL, as the OOM
killer does) while the owner holds its round's segment read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import stack_identity
from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import (
    REWRITE_AS_REFUSED,
    held_segment_reads,
    own_database,
    segment_read_held,
    until,
)
from tokenvault_client import Revealed, VaultClient

__all__ = ["own_database"]

_SERVE = """
import json, sys, time
from tests.conftest import running_vault
from tests.integration.audit_attacks import anchored_token

env = json.loads(sys.argv[1])
with running_vault(env, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault:
    token = anchored_token(env, vault)
    print(json.dumps({"address": vault.address, "token": token}), flush=True)
    while True:
        time.sleep(60)
"""
"""The vault serving (checkpoints every second, exported to the test's file) until killed; prints its address and a
token whose tokenize row is anchored."""


def test_a_reveal_row_rewritten_after_the_replica_died_in_its_round_is_reported_by_verify(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = own_database
    exported = Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"])
    replica = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(env)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert replica.stdout is not None
        serving = json.loads(replica.stdout.readline())
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner, segment_read_held(owner):
            with VaultClient.connect(serving["address"], stack_identity(env, "analyst"), deadline=10) as analyst:
                (outcome,) = analyst.detokenize([serving["token"]], "CASE-17140")
            assert isinstance(outcome, Revealed)  # the value was served
            found = owner.execute("SELECT max(id) FROM vault.audit_log WHERE purpose = 'CASE-17140'").fetchone()
            assert found is not None and found[0] is not None
            row_id = int(found[0])
            until("the round's segment read held", 15, lambda: held_segment_reads(owner))
            replica.kill()  # what the OOM killer does once a huge message lands on that read
            replica.wait(timeout=10)
        with attack.as_owner(env) as owner:
            for statement in REWRITE_AS_REFUSED:
                owner.execute(statement, {"id": row_id})
        code, printed = attack.run_audit_verify(env, exported, monkeypatch)
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait(timeout=10)
    assert code == 1, printed
    assert f"record id {row_id}" in printed and "noted in the exported copy" in printed, printed
