"""The audit trail against people who know how it works (issue: keyed, anchored chain).

Each test performs the attack against real Postgres and OpenBao and shows it refused or
detected: a database owner rewriting history and recomputing every hash, deleting the newest
rows (with and without the checkpoints), a backdated row, the serving role erasing or
re-pointing a value behind the audit's back. The tampering tests run on a database of their
own, so the session's shared log stays intact (tests/integration/audit_attacks.py holds that
database, the owner's session and the attack loop shared with the later rounds' tests). A
purpose that carries PII: tests/integration/test_purpose_spellings.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningVault, client_channel, running_vault
from tests.integration.audit_attacks import (
    Anchored,
    Sabotage,
    anchored,
    as_owner,
    audit_verify,
    audit_verify_fully,
    count_revealed,
    own_database,
    reveal_with_audit_undone,
    tokenize_fresh_ip,
)
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from vault_service.adapters.transit import verify_signature
from vault_service.domain.audit import AuditRecord
from vault_service.domain.checkpoints import Checkpoint
from vault_service.service.audit_verify import verify_audit, who_saw
from vault_service.service.exported_copy import read_exported_copy
from vault_service.service.revealing import reveal_hasher

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]

__all__ = ["anchored", "own_database"]  # fixtures used here


def _reveal_calls(env: dict[str, str], vault: RunningVault, count: int) -> None:
    channel = client_channel(env, vault.address, "analyst")
    stub = vault_pb2_grpc.TokenVaultStub(channel)
    for n in range(count):
        stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=["ip_" + "T" * 22], purpose=f"CASE-{n}"), timeout=10)
    channel.close()


def _anchored_reveals(env: dict[str, str], vault: RunningVault, count: int) -> None:
    """`count` reveal calls, then wait until a signed checkpoint covers them."""
    _reveal_calls(env, vault, count)
    vault.wait_for_checkpoint()


def _ids(env: dict[str, str]) -> list[int]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM vault.audit_log ORDER BY id").fetchall()]


def _rechain(conn: psycopg.Connection, row_ids: list[int]) -> None:
    """Recompute prev_hash and row_hash of `row_ids` in order, with the database's own hash function."""
    for row_id in row_ids:
        conn.execute(
            "UPDATE vault.audit_log a SET"
            " prev_hash = coalesce((SELECT b.row_hash FROM vault.audit_log b WHERE b.id < a.id"
            "   ORDER BY b.id DESC LIMIT 1), prev_hash),"
            " row_hash = vault.audit_row_hash(coalesce((SELECT b.row_hash FROM vault.audit_log b"
            "   WHERE b.id < a.id ORDER BY b.id DESC LIMIT 1), prev_hash), a.id, a.at, a.client,"
            "   a.client_serial, a.client_cert_sha256, a.action, a.purpose, a.token_types, a.item_count,"
            "   a.outcome, a.revealed)"
            " WHERE a.id = %s",
            (row_id,),
        )


def test_an_untouched_log_verifies_with_its_signed_checkpoints_and_exported_copy(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, exported = anchored
    _anchored_reveals(own_database, vault, 5)
    report = audit_verify(vault, exported)
    assert report.intact, report.finding
    assert report.checkpoints >= 1 and report.unanchored == 0
    assert exported.read_text().count("signature") >= 1  # the copy outside Postgres


class _ServiceRunsBetweenReads:
    """The vault's audit store, with the service appending and checkpointing right after the first read."""

    def __init__(self, env: dict[str, str], vault: RunningVault) -> None:
        self._env, self._vault, self._ran = env, vault, False

    def _after_a_read(self) -> None:
        if not self._ran:
            self._ran = True
            _anchored_reveals(self._env, self._vault, 3)

    def record_pages(self, after_id: int = 0) -> Iterator[list[AuditRecord]]:
        for page in self._vault.wired.audit.record_pages(after_id):
            yield page
            self._after_a_read()

    def checkpoints(self) -> list[Checkpoint]:
        checkpoints = self._vault.wired.audit.checkpoints()
        self._after_a_read()
        return checkpoints


def test_a_log_growing_and_checkpointed_while_it_is_verified_is_reported_intact(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # audit-verify runs against a live service: rows and a checkpoint of them can land between
    # its reads. Rows read before checkpoints made that checkpoint name rows the read had not
    # seen, a false "TAMPERED" (seen in a full test run on the session's shared log).
    vault, exported = anchored
    _anchored_reveals(own_database, vault, 2)
    store = _ServiceRunsBetweenReads(own_database, vault)
    report = verify_audit(store, vault.wired.signer.public_keys(), verify_signature, exported)
    assert store._ran
    assert report.intact, report.finding
    assert report.unanchored == 3  # the rows appended after the checkpoints were read: not anchored yet


def test_a_rewritten_row_with_every_later_hash_recomputed_is_caught_by_the_checkpoints(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, exported = anchored
    _anchored_reveals(own_database, vault, 6)
    ids = _ids(own_database)
    target = ids[2]
    with as_owner(own_database) as conn:
        conn.execute("UPDATE vault.audit_log SET purpose = 'nothing to see' WHERE id = %s", (target,))
        _rechain(conn, [i for i in ids if i >= target])
    report = audit_verify(vault, exported)
    assert report.finding is not None
    assert "no longer match the signed checkpoint" in report.finding.reason
    assert report.finding.first_row is not None and report.finding.first_row <= target


def test_deleting_the_newest_rows_is_caught_by_the_checkpoint_and_with_it_by_the_exported_copy(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, exported = anchored
    _anchored_reveals(own_database, vault, 4)
    newest = _ids(own_database)[-2:]
    with as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_log WHERE id = ANY(%s)", (newest,))
    rows_only = audit_verify(vault, exported)
    assert rows_only.finding is not None and "no longer match" in rows_only.finding.reason

    with as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id >= %s", (newest[0],))
    in_database = audit_verify(vault, None)
    assert in_database.finding is None  # what Postgres holds is consistent again ...
    with_copy = audit_verify(vault, exported)
    assert with_copy.finding is not None  # ... but the copy outside Postgres remembers
    assert "the database no longer has" in with_copy.finding.reason


def test_the_database_refuses_a_backdated_audit_row_even_from_the_serving_role(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="not the database clock"):
            conn.execute(
                "INSERT INTO vault.audit_log (at, client, action, item_count, outcome)"
                " VALUES ('2026-01-01', 'analyst', 'detokenize', 500, 'ok: 500 revealed, 0 refused')"
            )
        # A row without a time, or with a forged link, gets the database's clock and true link.
        conn.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome, prev_hash, row_hash)"
            " VALUES ('forger', 'erase', 1, 'ok', %s, %s)",
            (b"\x01" * 32, b"\x02" * 32),
        )
        row = conn.execute(
            "SELECT a.prev_hash = coalesce((SELECT b.row_hash FROM vault.audit_log b WHERE b.id < a.id"
            " ORDER BY b.id DESC LIMIT 1), %s), a.row_hash <> %s, abs(extract(epoch FROM a.at - now())) < 60"
            " FROM vault.audit_log a WHERE client = 'forger' ORDER BY id DESC LIMIT 1",
            (b"\x00" * 32, b"\x02" * 32),
        ).fetchone()
    assert row == (True, True, True)


def test_the_serving_role_cannot_erase_or_re_point_a_value_without_an_audit_row(
    stack_env: dict[str, str], vault: RunningVault, stub_for: StubFor
) -> None:
    ip_a, ip_b = f"198.51.{uuid.uuid4().int % 250}.7", f"198.51.{uuid.uuid4().int % 250}.8"
    etl = stub_for("etl-service")
    response = etl.Tokenize(
        vault_pb2.TokenizeRequest(
            items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=v) for v in (ip_a, ip_b)]
        ),
        timeout=10,
    )
    token_a, token_b = (r.token for r in response.results)
    with psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE vault.tokens SET sealed = NULL WHERE token = %s", (token_a,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "UPDATE vault.tokens t SET fingerprint = o.fingerprint FROM vault.tokens o"
                " WHERE t.token = %s AND o.token = %s",
                (token_a, token_b),
            )
        # The only way to erase is the audited function: its audit row lands in the same transaction.
        before = conn.execute("SELECT max(id) FROM vault.audit_log").fetchone()
        # With the token's true keyed hash, as the service writes it: a made-up one would leave the
        # session's shared log failing `audit verify`'s reconciliation for every later test.
        true_hash = reveal_hasher(vault.wired.keys.ring.audit_key)(token_a)
        conn.execute(
            "SELECT vault.erase_tokens(%s, %s, 1, 'vault-role', '', '', 'INC-1', 'ip')", ([token_a], [true_hash])
        )
        row = conn.execute(
            "SELECT client, action, outcome FROM vault.audit_log WHERE id > %s AND action = 'erase'",
            (before[0] if before else 0,),
        ).fetchone()
    assert row == ("vault-role", "erase", "ok: 1 erased, 0 not erased")


def test_who_saw_a_token_lists_its_reveals_across_clients_and_nothing_else(
    stack_env: dict[str, str], vault: RunningVault, stub_for: StubFor
) -> None:
    values = [f"203.0.{uuid.uuid4().int % 250}.{n}" for n in (21, 22)]
    response = stub_for("etl-service").Tokenize(
        vault_pb2.TokenizeRequest(
            items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=v) for v in values]
        ),
        timeout=10,
    )
    watched, other = (r.token for r in response.results)
    case = f"WHO-{uuid.uuid4().hex[:6]}"
    stub_for("analyst").Detokenize(vault_pb2.DetokenizeRequest(tokens=[watched], purpose=f"{case}-a"), timeout=10)
    stub_for("fraud-investigator").Detokenize(
        vault_pb2.DetokenizeRequest(tokens=[watched, other], purpose=f"{case}-f"), timeout=10
    )
    stub_for("analyst").Detokenize(vault_pb2.DetokenizeRequest(tokens=[other], purpose=f"{case}-other"), timeout=10)

    report = audit_verify_fully(vault, None)
    assert report.intact, report.finding
    seen = who_saw(report, vault.wired.keys.ring.audit_keys, watched)
    assert [(r.event.client, r.event.purpose) for r in seen] == [
        ("analyst", f"{case}-a"),
        ("fraud-investigator", f"{case}-f"),
    ]
    assert all(r.event.client_cert_sha256 and r.event.client_serial for r in seen)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:  # no token in clear anywhere in the log
        leaked = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE concat_ws(' ', client, purpose, outcome) LIKE %s",
            (f"%{watched}%",),
        ).fetchone()
    assert leaked == (0,)


def test_the_serving_role_cannot_store_a_checkpoint_that_does_not_match_the_log(stack_env: dict[str, str]) -> None:
    # A bogus checkpoint far ahead would stop the service from ever checkpointing again.
    with psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match=r"does not have|not newer"):
            conn.execute(
                "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
                " VALUES (9000000000000000, '\\x00', 0, now(), 'tokenvault-audit', 'vault:v1:AAAA')"
            )
        head = conn.execute("SELECT id, row_hash FROM vault.audit_log ORDER BY id DESC LIMIT 1").fetchone()
        assert head is not None
        with pytest.raises(psycopg.errors.CheckViolation, match=r"counts|not newer"):
            conn.execute(
                "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
                " VALUES (%s, %s, 1, now(), 'tokenvault-audit', 'vault:v1:AAAA')",
                head,
            )


def test_planting_a_token_row_or_changing_a_data_key_writes_an_audit_row_in_the_same_transaction(
    stack_env: dict[str, str],
) -> None:
    planted = "ip_" + uuid.uuid4().hex[:22]
    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as conn:
        key_id, fp_key = conn.execute(
            "SELECT max(id) FILTER (WHERE purpose = 'encryption'), max(id) FILTER (WHERE purpose = 'fingerprint')"
            " FROM vault.data_keys"
        ).fetchone()  # type: ignore[misc]
        with conn.transaction():
            conn.execute(
                "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
                " VALUES (%s, 'ip', %s, %s, %s, '\\x00')",
                (planted, uuid.uuid4().bytes * 2, fp_key, key_id),
            )
            issued = conn.execute(
                "SELECT client, outcome FROM vault.audit_log WHERE action = 'issue' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            conn.execute("UPDATE vault.data_keys SET state = state WHERE id = %s", (key_id,))
            changed = conn.execute(
                "SELECT client, action FROM vault.audit_log WHERE action LIKE 'data-key-%' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            raise psycopg.Rollback()  # nothing of the experiment stays, audit rows included
    assert issued is not None and issued[0].startswith("tokenvault_vault") and issued[1] == "ok: 1 tokens issued"
    assert changed is not None and changed == (changed[0], "data-key-update")
    assert changed[0].startswith("tokenvault_vault")


def test_resealing_with_what_is_not_a_sealed_value_is_refused(stack_env: dict[str, str]) -> None:
    with (
        psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation, match="not a sealed value"),
    ):
        conn.execute("SELECT vault.reseal_tokens(ARRAY['ip_x'], ARRAY[1], ARRAY[1], ARRAY['\\x00'::bytea], 'job')")


def test_no_other_login_can_hold_the_audit_chain_lock(stack_env: dict[str, str]) -> None:
    with (
        psycopg.connect(stack_env["PG_ETL_DSN"], autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT pg_advisory_lock(1635083380)")


def test_replicas_checkpoint_in_turn_and_a_forged_checkpoint_count_is_never_signed(
    own_database: dict[str, str], tmp_path: Path
) -> None:
    with running_vault(own_database, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="300") as vault:
        _replicas_and_a_forged_count(own_database, vault, tmp_path)


def _replicas_and_a_forged_count(own_database: dict[str, str], vault: RunningVault, tmp_path: Path) -> None:
    upkeeps = [vault.wired.audit_upkeep(3600, tmp_path / f"replica-{n}.jsonl") for n in (1, 2)]
    for turn in range(4):  # each counts from the head it counted last, the other checkpointing between
        _reveal_calls(own_database, vault, 2)
        made = upkeeps[turn % 2].run_once()
        assert made is not None
        with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
            total = conn.execute("SELECT count(*) FROM vault.audit_log WHERE id <= %s", (made.head.head_id,))
            assert (made.head.row_count,) == total.fetchone()
    # The database owner plants a checkpoint row claiming a wrong count (triggers bypassed).
    _reveal_calls(own_database, vault, 2)
    with as_owner(own_database) as conn:
        head = conn.execute("SELECT id, row_hash FROM vault.audit_log ORDER BY id DESC LIMIT 1").fetchone()
        conn.execute(
            "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
            " VALUES (%s, %s, 1, now(), 'tokenvault-audit', 'vault:v1:AAAA')",
            head,
        )
    _reveal_calls(own_database, vault, 2)
    # The replica's next checkpoint carries the count it counted itself, which the database's
    # trigger (counting from the planted row) refuses: it is exported with that count all the
    # same, never with the planted number, and not stored (the refusal is logged and counted).
    made = upkeeps[0].run_once()
    assert made is not None
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
        counted = conn.execute("SELECT count(*) FROM vault.audit_log WHERE id <= %s", (made.head.head_id,)).fetchone()
        stored = conn.execute("SELECT count(*) FROM vault.audit_checkpoints WHERE head_id = %s", (made.head.head_id,))
        assert stored.fetchone() == (0,)
    assert (made.head.row_count,) == counted and made.head.row_count != 1
    assert list(read_exported_copy(tmp_path / "replica-1.jsonl").checkpoints)[-1] == made


_DROP_AUDIT_ROWS = {
    "rule": Sabotage(
        plant="CREATE RULE audit_dropped AS ON INSERT TO vault.audit_log DO INSTEAD NOTHING",
        remove="DROP RULE audit_dropped ON vault.audit_log",
    ),
    "trigger": Sabotage(
        plant="CREATE FUNCTION public.audit_dropped() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
        " CREATE TRIGGER audit_dropped BEFORE INSERT ON vault.audit_log"
        " FOR EACH ROW EXECUTE FUNCTION public.audit_dropped()",
        remove="DROP TRIGGER audit_dropped ON vault.audit_log; DROP FUNCTION public.audit_dropped()",
    ),
}


@pytest.mark.parametrize("dropped_by", sorted(_DROP_AUDIT_ROWS))
def test_a_reveal_whose_audit_row_the_database_dropped_is_not_revealed(
    own_database: dict[str, str], anchored: Anchored, dropped_by: str
) -> None:
    # "Written before anything is returned: no audit row, no reveal." The database owner adds a
    # rule (or a BEFORE trigger returning NULL) that turns every insert into vault.audit_log into
    # nothing: the service's append succeeds (INSERT 0 0), the analyst gets the value, and
    # nothing is ever written to anchor.
    # With the rule dropped again, the chain and its checkpoints are untouched: audit-verify
    # reports the log intact. The service must check that its rows were stored (as it does for
    # new tokens) and refuse the reveal otherwise.
    vault, _ = anchored
    _anchored_reveals(own_database, vault, 2)
    seen = reveal_with_audit_undone(own_database, anchored, _DROP_AUDIT_ROWS[dropped_by])
    assert seen.done == 0 or seen.recorded == seen.done or seen.report.finding is not None, seen.unnoticed()


def test_a_rewritten_anchored_row_stays_caught_after_the_service_signs_the_rewritten_chain(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # The owner rewrites an anchored row (every later hash recomputed, as above) and deletes the
    # checkpoints that vouch for it, then waits: the service signs its next checkpoint over the
    # rewritten chain (its count holds: no row is missing), stores it and exports it. The
    # exported copy still holds the checkpoints signed over the original rows, which no longer
    # match them; audit-verify compares only the newest exported one with the database's.
    vault, exported = anchored
    _anchored_reveals(own_database, vault, 3)
    first_anchor = vault.wired.audit.last_checkpoint_head()
    _anchored_reveals(own_database, vault, 3)
    target = next(i for i in _ids(own_database) if i > first_anchor)  # anchored by the second checkpoint
    with as_owner(own_database) as conn:
        conn.execute("UPDATE vault.audit_log SET purpose = 'nothing to see' WHERE id = %s", (target,))
        _rechain(conn, [i for i in _ids(own_database) if i >= target])
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id >= %s", (target,))
    _anchored_reveals(own_database, vault, 1)  # the service goes on; its next checkpoint covers the rewrite
    report = audit_verify(vault, exported)
    assert report.finding is not None, (
        f"row {target} was rewritten after it was anchored, and audit-verify with the exported copy"
        f" reports the log intact ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
    assert report.finding.first_row is not None and report.finding.first_row <= target


_PLANTED_CHECKPOINTS = {
    # One row far ahead of the log, triggers bypassed.
    "ahead of the log": (
        "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
        " VALUES (4000000000000000000, '\\x00', 0, now(), 'tokenvault-audit', 'vault:v1:AAAA')"
    ),
    # A trigger of the owner's writing a checkpoint of every new head as it is appended, with the
    # right head, hash and count and a made-up signature: every head looks anchored already.
    "at every new head": (
        "CREATE FUNCTION public.plant_checkpoint() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$"
        " BEGIN PERFORM set_config('session_replication_role', 'replica', true);"
        " INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
        " VALUES (NEW.id, NEW.row_hash, (SELECT count(*) FROM vault.audit_log WHERE id <= NEW.id), now(),"
        " 'tokenvault-audit', 'vault:v1:AAAA');"
        " PERFORM set_config('session_replication_role', 'origin', true); RETURN NULL; END $$;"
        " CREATE TRIGGER plant_checkpoint AFTER INSERT ON vault.audit_log"
        " FOR EACH ROW EXECUTE FUNCTION public.plant_checkpoint()"
    ),
}


def _hidden_rows_exported(env: dict[str, str], exported: Path) -> bool:
    """Whether a checkpoint the vault exported covers every HIDDEN reveal's audit row."""
    with as_owner(env) as conn:
        row = conn.execute("SELECT max(id) FROM vault.audit_log WHERE purpose LIKE 'HIDDEN-%'").fetchone()
    newest = row[0] if row is not None else None
    return newest is not None and any(c.head.head_id >= newest for c in read_exported_copy(exported).checkpoints)


@pytest.mark.parametrize("planted", sorted(_PLANTED_CHECKPOINTS))
def test_a_planted_checkpoint_cannot_silence_anchoring_so_that_reveals_are_deleted_unnoticed(
    own_database: dict[str, str], anchored: Anchored, planted: str
) -> None:
    # The database owner plants a checkpoint row far ahead of the log (triggers bypassed). The
    # service then finds "a checkpoint newer than the head" every round and stops signing,
    # silently; every reveal from then on stays unanchored, and once the owner deletes those
    # rows and the planted checkpoint, nothing vouches that they ever existed. The guarantee:
    # a reveal that happened either was refused while the log could not be anchored, or
    # audit-verify notices that its row is gone.
    vault, exported = anchored
    _anchored_reveals(own_database, vault, 2)
    anchored_head = vault.wired.audit.last_checkpoint_head()
    with as_owner(own_database) as conn:
        conn.execute(_PLANTED_CHECKPOINTS[planted])
    token = tokenize_fresh_ip(own_database, vault)
    revealed = count_revealed(own_database, vault, token, [f"HIDDEN-{n}" for n in range(3)])
    deadline = time.monotonic() + 3  # three checkpoint intervals: the service had every chance to anchor them
    while not _hidden_rows_exported(own_database, exported) and time.monotonic() < deadline:
        time.sleep(0.2)  # once an exported checkpoint covers them, waiting on gives no more chance
    with as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_log WHERE id > %s", (anchored_head,))
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id > %s", (anchored_head,))
    report = audit_verify(vault, exported)
    assert revealed == 0 or report.finding is not None, (
        f"{revealed} value(s) were revealed while anchoring was silenced, and after the database owner"
        f" deleted their audit rows audit-verify reports the log intact ({report.rows} rows,"
        f" {report.checkpoints} checkpoints)"
    )


def test_rows_deleted_in_the_middle_while_the_service_was_down_are_caught_by_the_older_exported_checkpoints(
    own_database: dict[str, str], tmp_path: Path
) -> None:
    # After a restart the service counts every row afresh, so a log the owner shortened in the
    # middle (the later hashes recomputed, the checkpoints from the deleted row on removed) gets
    # a count that agrees with it: the service signs, stores and exports the shortened chain.
    # Only the checkpoints exported before the restart still say which rows there were.
    exported = tmp_path / "checkpoints.jsonl"
    settings = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1", "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported)}
    with running_vault(own_database, **settings) as vault:
        _anchored_reveals(own_database, vault, 3)
        first_anchor = vault.wired.audit.last_checkpoint_head()
        _anchored_reveals(own_database, vault, 3)
    ids = _ids(own_database)
    deleted = next(i for i in ids if i > first_anchor)
    with as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_log WHERE id = %s", (deleted,))
        _rechain(conn, [i for i in ids if i > deleted])
        conn.execute("DELETE FROM vault.audit_checkpoints WHERE head_id >= %s", (deleted,))
    with running_vault(own_database, **settings) as restarted:
        _anchored_reveals(own_database, restarted, 1)  # signed over the shortened chain, and stored: the count holds
        assert audit_verify(restarted, None).intact  # what Postgres holds agrees with itself
        report = audit_verify(restarted, exported)
    assert report.finding is not None, (
        f"row {deleted} was deleted while the service was down, and audit-verify with the exported copy"
        f" reports the log intact ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
    assert report.finding.first_row == next(i for i in ids if i > deleted)  # the first row after the gap
