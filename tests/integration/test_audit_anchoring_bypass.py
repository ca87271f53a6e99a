"""The audit fixes of 3 Dec against a database owner who knows them (second insider round).

Each test performs the attack against real Postgres and OpenBao on a database of its own and
states the guarantee it breaks (docs/threat-model.md, *Insider: the database owner*): rows older
than the checkpoint interval are anchored, and a reveal is served only once its audit row is
durably stored.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from prometheus_client import REGISTRY

from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import Anchored, anchored, own_database
from vault_service.service.exported_copy import read_exported_copy

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests

_FAR_AHEAD = 1_000_000_000_000
_CHAIN_LOCK = 1635083380


def _plant_row_far_ahead(env: dict[str, str], at_id: int) -> tuple[int, int]:
    """Insert one ordinary-looking audit row (chained by the database's own trigger) at id `at_id` + 1.

    The sequence is moved there for the one insert and back afterwards, under the chain lock, so
    the service's rows go on taking the ids below. No trigger is bypassed; the unique index on
    prev_hash (0005) is dropped, since every later row links to the planted one (the trigger takes
    the row with the highest id as the tail), and made again once those rows are gone. Returns the planted
    row's id and the sequence's value before (the newest row the planted one is chained after).
    """
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
        conn.execute("DROP INDEX IF EXISTS vault.audit_log_prev_hash")
        below = conn.execute("SELECT last_value FROM vault.audit_log_id_seq").fetchone()
        conn.execute("SELECT setval('vault.audit_log_id_seq', %s)", (at_id,))
        row = conn.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome)"
            " VALUES ('etl-service', 'tokenize', 1, 'ok: 1 values, 0 new tokens') RETURNING id"
        ).fetchone()
        conn.execute("SELECT setval('vault.audit_log_id_seq', %s)", below)
    assert row is not None and below is not None
    return int(row[0]), int(below[0])


def _anchored_within_the_sequence(env: dict[str, str], exported: Path, planted: int) -> bool:
    """Whether an exported checkpoint of a head below the `planted` row covers every HIDDEN reveal's row."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT max(id) FROM vault.audit_log WHERE purpose LIKE 'HIDDEN-%'").fetchone()
    newest = row[0] if row is not None else None
    heads = [c.head.head_id for c in read_exported_copy(exported).checkpoints]
    return newest is not None and any(newest <= head < planted for head in heads)


def _sequence_tampered_seen() -> float:
    return REGISTRY.get_sample_value("tokenvault_audit_id_sequence_tampered_total") or 0.0


def test_a_row_planted_beyond_the_id_sequence_cannot_keep_reveals_unanchored_and_deletable(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # Threat model: rows newer than the last checkpoint - "at most TOKENVAULT_AUDIT_CHECKPOINT_SECONDS
    # while the service runs" - can be deleted without a trace; "everything older is caught".
    # The upkeep takes the head as the row with the highest id and counts rows by id range from
    # the head it counted last. The database owner plants one ordinary-looking row far ahead of
    # the id sequence (the trigger chains it properly) and moves the sequence back: every later
    # row gets a lower id, so the head never moves and nothing newer is ever signed - without an
    # error, a log line or the planted-checkpoint alert. Planting another such row now and then
    # keeps `..._checkpoint_exported_timestamp_seconds` fresh, so AuditAnchoringStopped stays
    # silent too. Reveals made meanwhile, seconds to hours old, are then deleted and audit-verify
    # (with the exported copy) reports the log intact.
    vault, exported = anchored
    token = attack.anchored_token(own_database, vault)
    reported = _sequence_tampered_seen()
    first, chained_after = _plant_row_far_ahead(own_database, _FAR_AHEAD)
    vault.wait_for_checkpoint()  # on main the planted row was signed and exported like any head

    revealed = attack.count_revealed(own_database, vault, token, [f"HIDDEN-{n}" for n in range(3)])
    deadline = time.monotonic() + 4  # four checkpoint intervals: every chance to anchor the reveals
    while not _anchored_within_the_sequence(own_database, exported, first) and time.monotonic() < deadline:
        time.sleep(0.2)  # once a checkpoint below the planted row covers them, waiting on gives no more chance
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
        hidden = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose LIKE 'HIDDEN-%'").fetchone()
    assert hidden == (3,)  # the reveals were recorded ...
    second, _ = _plant_row_far_ahead(own_database, first)  # ... and the owner keeps the alert's metric fresh
    vault.wait_for_checkpoint()
    assert second > first

    with attack.as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_log WHERE id > %s AND id < %s", (chained_after, first))
        conn.execute("SELECT setval('vault.audit_log_id_seq', %s)", (second,))  # later rows follow again
        conn.execute("CREATE UNIQUE INDEX audit_log_prev_hash ON vault.audit_log (prev_hash)")
        gone = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose LIKE 'HIDDEN-%'").fetchone()
    assert gone == (0,)
    report = attack.audit_verify(vault, exported)
    assert revealed == 0 or report.finding is not None, (
        f"{revealed} value(s) were revealed, their audit rows stayed unanchored for over four checkpoint"
        f" intervals while checkpoints went on being exported, and after the database owner deleted them"
        f" audit-verify with the exported copy reports the log intact ({report.rows} rows,"
        f" {report.checkpoints} checkpoints)"
    )
    # The head is the newest row within the id sequence (so the reveals were signed), and each
    # round that met a row beyond it counted it for the AuditIdSequenceTampered alert.
    assert _sequence_tampered_seen() > reported, "the rows planted beyond the id sequence went unreported"


def test_anchoring_resumes_after_the_database_owner_puts_an_unreadable_head_row_and_removes_it(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # The upkeep thread survives only VaultError ("the next round catches up"). A head row it
    # cannot read - NULL row_hash, after the owner dropped the CHECK that forbids it - raises a
    # TypeError in the head query's result handling; the thread ends and never checkpoints
    # again, also once the row is gone, until the process restarts. Every later reveal stays
    # unanchored (deletable without a trace) for as long as nobody restarts the vault. (The row
    # takes the sequence's next id: one beyond the sequence is not taken as the head at all.)
    vault, _ = anchored
    token = attack.anchored_token(own_database, vault)
    with attack.as_owner(own_database) as conn:
        conn.execute("ALTER TABLE vault.audit_log DROP CONSTRAINT audit_log_chained")
        unreadable = conn.execute(
            "INSERT INTO vault.audit_log (id, at, client, action, item_count, outcome, prev_hash, row_hash)"
            " VALUES (nextval('vault.audit_log_id_seq'), now(), 'etl-service', 'tokenize', 1, 'ok', '\\x00', NULL)"
            " RETURNING id"
        ).fetchone()
    time.sleep(3)  # three checkpoint intervals: the upkeep meets the row
    with attack.as_owner(own_database) as conn:
        conn.execute("DELETE FROM vault.audit_log WHERE id = %s", unreadable)
        conn.execute(
            "ALTER TABLE vault.audit_log ADD CONSTRAINT audit_log_chained"
            " CHECK (at IS NOT NULL AND prev_hash IS NOT NULL AND row_hash IS NOT NULL)"
        )
    assert attack.count_revealed(own_database, vault, token, ["AFTER-REPAIR"]) == 1
    vault.wait_for_checkpoint(seconds=10)  # the reveal is anchored again within a few intervals


def test_an_audit_id_sequence_given_a_cache_is_reported_as_tampered(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # A sequence with a cache hands each pooled session a block of ids: a row committed later can
    # take an id below the head the upkeep already counted, and no checkpoint ever covers it. The
    # owner's ALTER SEQUENCE must not go unnoticed (read from pg_sequence by the service's role).
    vault, _ = anchored
    vault.wait_for_checkpoint()
    seen = _sequence_tampered_seen()
    with attack.as_owner(own_database) as conn:
        conn.execute("ALTER SEQUENCE vault.audit_log_id_seq CACHE 1000")
    try:
        deadline = time.monotonic() + 10
        while _sequence_tampered_seen() <= seen and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sequence_tampered_seen() > seen, "the audit id sequence given a cache went unreported"
    finally:
        with attack.as_owner(own_database) as conn:
            conn.execute("ALTER SEQUENCE vault.audit_log_id_seq CACHE 1")
