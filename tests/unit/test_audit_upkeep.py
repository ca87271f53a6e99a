"""The audit upkeep's rounds, with fakes: counts kept when the append fails, and anchoring that a
checkpoint planted ahead of the log does not silence."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, FakeCheckpointStore, FakeSigner, chained_records, upkeep_with
from vault_service.adapters.postgres.errors import translated
from vault_service.domain.anchoring import AppendedRows, AuditChecksOverdue
from vault_service.domain.audit import AuditEvent
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.errors import (
    AuditDatabaseUnreachable,
    AuditUnavailable,
    DatabaseUnavailable,
    DatabaseUnreachable,
    StorageError,
    TooManyRequests,
)
from vault_service.domain.identity import Caller
from vault_service.domain.rate_limit import RateLimit
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.checkpoint_export import checkpoint_exporter
from vault_service.service.metering import RefusalAuditor, TokenizeMeter


def test_tokenize_counts_survive_a_failed_audit_append_and_are_written_by_the_next_round() -> None:
    audit, meter = FakeAuditLog(fail=True), TokenizeMeter()
    upkeep = upkeep_with(audit, FakeCheckpointStore(), meter, [], [])
    etl, other = Caller("etl-service", "a1", "ff"), Caller("batch-job", "b2", "ee")
    meter.record(etl, 1000, 10)
    meter.record(other, 5, 5)
    with pytest.raises(OSError):
        upkeep.run_once()  # the database is away: nothing written
    meter.record(etl, 500, 0)  # the next interval's calls add to what was kept
    audit.fail = False
    upkeep.run_once()
    assert sorted((e.client, e.item_count, e.outcome) for e in audit.events) == [
        ("batch-job", 5, "ok: 5 values, 5 new tokens"),
        ("etl-service", 1500, "ok: 1500 values, 10 new tokens"),
    ]
    assert meter.flush() == []


def test_throttled_refusal_counts_survive_a_failed_audit_append() -> None:
    audit = FakeAuditLog()
    refusals = RefusalAuditor(audit, RateLimit(per_second=0.001, burst=1))
    event = AuditEvent("stranger", "detokenize", "refused: Unauthenticated", 1)
    refusals.refused("peer", event)
    for _ in range(3):
        with pytest.raises(TooManyRequests):
            refusals.refused("peer", event)
    audit.fail = True
    with pytest.raises(OSError):
        refusals.flush_into(audit.append)
    audit.fail = False
    refusals.flush_into(audit.append)
    assert [(e.item_count, e.outcome) for e in audit.events[1:]] == [(3, "refused: 3 more refusals, throttled")]


def test_a_checkpoint_planted_ahead_of_the_log_is_reported_and_the_real_head_is_still_signed_and_exported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, exported, planted = FakeCheckpointStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, planted)
    store.head_id = 5
    first = upkeep.run_once()
    assert first is not None and store.stored == [first] == exported  # the normal round: stored, then exported
    store.planted = 4_000_000_000_000_000_000
    store.head_id = 8
    with caplog.at_level(logging.ERROR):
        made = upkeep.run_once()
    assert made is not None and made.head.head_id == 8 and made.signature == FakeSigner().sign(made.head.message())
    assert exported == [first, made] and store.stored == [first]  # exported, not stored (the table refuses it)
    assert "beyond the audit log's head" in caplog.text and planted == [1]
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert upkeep.run_once() is None  # nothing new: nothing signed, and the error is not repeated
    assert exported == [first, made] and planted == [1, 1] and caplog.text == ""
    store.head_id = 9
    assert upkeep.run_once() is not None and len(exported) == 3
    store.planted = 0  # the planted row removed: checkpoints are stored again
    store.head_id = 10
    again = upkeep.run_once()
    assert again is not None and store.stored[-1] == again == exported[-1]


def test_a_head_that_did_not_grow_is_not_checkpointed_again() -> None:
    store, exported = FakeCheckpointStore(), list[Checkpoint]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [])
    assert upkeep.run_once() is None  # an empty log
    store.head_id = 3
    assert upkeep.run_once() is not None
    assert upkeep.run_once() is None and len(exported) == 1


def test_a_checkpoint_planted_at_the_head_without_a_valid_signature_does_not_pass_for_an_anchor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The database owner writes a checkpoint for each new head as it appears (a trigger of its
    # own): the upkeep would find every head "anchored" and sign nothing.
    store, exported, planted = FakeCheckpointStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, planted)
    store.head_id = 5
    assert upkeep.run_once() is not None
    store.head_id = store.planted = 9
    with caplog.at_level(logging.ERROR):
        made = upkeep.run_once()
    assert made is not None and made.head.head_id == 9 and exported[-1] == made
    assert "at the head without the signing key's signature" in caplog.text and planted == [1]


def test_another_processs_genuine_checkpoint_of_the_head_is_left_as_the_anchor_and_exported_here_too() -> None:
    """Not signed or stored again; exported once, so this log carries an admin command's checkpoint (R19-2)."""
    store, exported = FakeCheckpointStore(), list[Checkpoint]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [])
    store.head_id = 7
    other = store.head()
    assert other is not None
    theirs = Checkpoint(other, "k", FakeSigner().sign(other.message()))  # another replica's, or an admin's
    store.stored.append(theirs)
    made = upkeep.run_once()
    assert made is not None and exported == [made] and made.head == other and made.signature == theirs.signature
    assert store.stored == [theirs]  # nothing stored again
    assert upkeep.run_once() is None and len(exported) == 1  # once


def test_a_row_beyond_the_id_sequence_is_reported_once_counted_every_round_and_the_head_still_moves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, exported, tampered = FakeCheckpointStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], tampered)
    store.head_id, store.beyond = 5, 1_000_000_000_001
    with caplog.at_level(logging.ERROR):
        first = upkeep.run_once()
    assert first is not None and first.head.head_id == 5  # the head within the sequence is signed
    assert "row 1000000000001, beyond the id sequence's last value 5" in caplog.text and tampered == [1]
    caplog.clear()
    store.head_id = 6
    with caplog.at_level(logging.ERROR):
        second = upkeep.run_once()
    assert second is not None and second.head.head_id == 6 and exported == [first, second]
    assert caplog.text == "" and tampered == [1, 1]  # counted every round, logged once per planted row
    store.beyond = 1_000_000_000_002  # planted again
    with caplog.at_level(logging.ERROR):
        upkeep.run_once()
    assert "row 1000000000002" in caplog.text and tampered == [1, 1, 1]
    store.beyond = 0  # removed: nothing more to report
    upkeep.run_once()
    assert tampered == [1, 1, 1]


@pytest.mark.parametrize(("cache", "increment"), [(1000, 1), (1, -1)])
def test_an_id_sequence_altered_to_number_rows_out_of_commit_order_is_reported(
    cache: int, increment: int, caplog: pytest.LogCaptureFixture
) -> None:
    # With a cache, each pooled session takes a block of ids: rows committed later can take ids
    # below the head already counted, and no checkpoint would ever cover them.
    store, exported, tampered = FakeCheckpointStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], tampered)
    store.head_id = 5
    upkeep.run_once()
    assert tampered == []
    store.cache, store.increment = cache, increment
    with caplog.at_level(logging.ERROR):
        upkeep.run_once()
        store.head_id = 6
        upkeep.run_once()
    assert f"was altered (cache {cache}, increment {increment})" in caplog.text and tampered == [1, 1]
    assert caplog.text.count("was altered") == 1


def test_a_database_before_migration_0015_is_counted_every_round_logged_once_and_still_checkpointed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # During an upgrade the service runs on a database whose sequence it may not read yet: the
    # error was logged every interval (2 s) until the migration ran.
    store, exported, tampered = FakeCheckpointStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], tampered)
    store.fail_sequence = AuditUnavailable("permission denied for sequence audit_log_id_seq")
    with caplog.at_level(logging.ERROR):
        for head_id in (5, 6, 7):
            store.head_id = head_id
            upkeep.run_once()
    assert [c.head.head_id for c in exported] == [5, 6, 7]  # checkpoints go on regardless
    assert tampered == [1, 1, 1]  # the alert stays up every round
    assert caplog.text.count("apply the migrations (0015)") == 1


@pytest.mark.parametrize("fails_in", ["head", "export"])
def test_the_upkeep_thread_survives_any_failing_round_and_checkpoints_once_it_passes(
    fails_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An unreadable head row (TypeError) or a full disk under the checkpoint file (OSError) ended
    # the thread for good: it caught VaultError only.
    store, exported, failed = FakeCheckpointStore(), list[Checkpoint](), list[int]()
    failure: Exception = TypeError("cannot convert 'NoneType' object to bytes")
    if fails_in == "head":
        store.fail_head = failure
    else:
        failure = OSError(28, "No space left on device")
    healed = False

    def export(checkpoint: Checkpoint) -> None:
        if fails_in == "export" and not healed:
            raise failure
        exported.append(checkpoint)

    upkeep = AuditUpkeep(
        FakeAuditLog(),
        store,
        FakeSigner(),
        TokenizeMeter(),
        RefusalAuditor(FakeAuditLog()),
        export,
        interval=0.01,
        on_failed=lambda: failed.append(1),
    )
    store.head_id = 3
    deadline = time.monotonic() + 5
    with caplog.at_level(logging.ERROR):
        upkeep.start()
        rounds = 3 if fails_in == "head" else 1  # the checkpoint stored, its export fails once
        while len(failed) < rounds and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(failed) >= rounds, "the failing rounds were not counted"
        store.fail_head, healed, store.head_id = None, True, 4
        while not exported and time.monotonic() < deadline:
            time.sleep(0.01)
        upkeep.stop()
    assert exported and exported[-1].head.head_id == 4  # the thread lived on and anchored the new head
    logged = [r.getMessage() for r in caplog.records if "audit upkeep round failed" in r.getMessage()]
    assert logged == [f"audit upkeep round failed ({type(failure).__name__}: {failure}); retrying every interval"]


def test_a_checkpoint_the_database_silently_drops_is_exported_anyway_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class _DroppingStore(FakeCheckpointStore):
        def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
            return False  # a DO INSTEAD NOTHING rule: nothing stored, nothing said

    store, exported, planted = _DroppingStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, planted)
    store.head_id = 4
    with caplog.at_level(logging.ERROR):
        made = upkeep.run_once()
    assert made is not None and exported == [made] and planted == [1]
    assert "did not store the audit checkpoint of row 4" in caplog.text


def test_a_checkpoint_the_database_refuses_is_exported_anyway_once_per_head_but_an_unreachable_one_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Insider round 8, Finding 7: while storing failed, nothing was exported, so the rows of that
    # period were anchored nowhere and could be deleted after a restart with audit-verify intact.
    class _RefusingStore(FakeCheckpointStore):
        refusal: Exception | None = StorageError("the vault database refused the operation (CheckViolation)")

        def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
            if self.refusal is not None:
                raise self.refusal
            return super().add_checkpoint(checkpoint)

    store, exported, refused = _RefusingStore(), list[Checkpoint](), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], on_refused=lambda: refused.append(1))
    store.head_id = 4
    with caplog.at_level(logging.ERROR):
        upkeep.run_once()
        upkeep.run_once()  # the same head: counted again, not exported again
        store.head_id = 6
        upkeep.run_once()
    assert [c.head.head_id for c in exported] == [4, 6] and not store.stored and refused == [1, 1, 1]
    assert caplog.text.count("the database refused to store the audit checkpoint of row 4 (") == 1
    assert "row 6" not in caplog.text  # the same refusal is logged once
    store.refusal, store.head_id = DatabaseUnavailable("the vault database is unavailable; retry later"), 7
    with pytest.raises(DatabaseUnavailable):  # a dependency down: the round is postponed, as before
        upkeep.run_once()
    assert [c.head.head_id for c in exported] == [4, 6] and refused == [1, 1, 1]
    store.refusal = None
    assert upkeep.run_once() is not None and [c.head.head_id for c in store.stored] == [7]


class _GatedAuditLog(FakeAuditLog):
    """Refuses appends as PostgresAuditLog does while `rows` go unchecked."""

    def __init__(self, rows: AppendedRows) -> None:
        super().__init__()
        self.rows = rows

    def append(self, event: AuditEvent) -> int:
        self.rows.check_open()
        return super().append(event)


def test_rows_a_failing_last_round_leaves_unchecked_are_logged_and_counted_at_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Review 16, finding 1: stop() ran one last round and, when it failed too, the remembered rows
    # went away with the process, with no log and no count.
    records = chained_records(3)
    rows, unchecked = AppendedRows(), list[int]()
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records[1:]])
    store = FakeChainStore(records)
    store.fail_head = DatabaseUnavailable("the segment read failed")
    upkeep = upkeep_with(
        FakeAuditLog(), store, TokenizeMeter(), [], [], appended=rows, on_rows_unchecked=unchecked.append
    )
    with caplog.at_level(logging.ERROR):
        upkeep.stop()
    assert unchecked == [2]
    assert "2 audit row(s) this service appended (ids 2 to 3) were never checked" in caplog.text


def test_a_round_checks_the_rows_though_its_own_aggregated_rows_are_refused_for_them() -> None:
    # The upkeep's own flush goes through the gated append: were its refusal to end the round,
    # the rows would never be checked and the appends never reopen.
    records = chained_records(2)
    now = [0.0]
    rows = AppendedRows(max_age=5.0, clock=lambda: now[0])
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records])
    now[0] = 10.0
    audit, meter, exported = _GatedAuditLog(rows), TokenizeMeter(), list[Checkpoint]()
    meter.record(Caller("etl-service", "a1", "ff"), 7, 1)
    upkeep = upkeep_with(audit, FakeChainStore(records), meter, exported, [], appended=rows)
    upkeep.run_once()
    assert len(rows) == 0 and [c.head.head_id for c in exported] == [2] and audit.events == []
    upkeep.run_once()  # the appends are open again: the kept counts are written
    assert [e.item_count for e in audit.events] == [7]


def test_stop_logs_the_unchecked_ids_before_the_last_round_and_skips_it_while_a_round_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Review 17, finding 2: with a hung round, stop() ran a second one concurrently, which hung
    # too, and the pod was SIGKILLed before the unchecked ids were logged.
    records = chained_records(3)
    rows = AppendedRows()
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records[1:]])
    store, rounds = FakeChainStore(records), list[int]()
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), [], [], appended=rows)
    upkeep.run_once = lambda: rounds.append(1)  # type: ignore[method-assign]

    class _HungThread:
        def join(self, timeout: float | None = None) -> None:
            pass

        def is_alive(self) -> bool:
            return True

    upkeep._thread = _HungThread()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING):
        upkeep.stop()
    assert rounds == []
    first = caplog.text.index("stopping with 2 audit row(s) this service appended (ids 2 to 3)")
    assert first < caplog.text.index("were never checked")


def test_a_round_failing_for_want_of_a_database_connection_is_refused_as_an_outage_not_as_tampering() -> None:
    # Review 17 #4: a database down past the bound made the refusal send callers to the security
    # team. A round that gets no connection is noted; a dropped connection or a query error (which
    # the database owner can cause for one statement) is not, and a passing round clears it.
    records = chained_records(2)
    now = [0.0]
    rows = AppendedRows(max_age=5.0, clock=lambda: now[0])
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records])
    store = FakeChainStore(records)
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), [], [], appended=rows)
    now[0] = 10.0
    store.fail_head = DatabaseUnreachable("the vault database cannot be reached; retry later")
    upkeep._safely()
    with pytest.raises(AuditChecksOverdue) as outage:
        rows.check_open()
    assert outage.value.database_unreachable and outage.value.reason.endswith(
        "while the vault's database cannot be reached"
    )
    assert "cannot reach the vault's database" in str(outage.value) and "security team" not in str(outage.value)
    for cause in (DatabaseUnavailable("connection lost"), StorageError("refused (InternalError_)")):
        store.fail_head = cause
        upkeep._safely()
        with pytest.raises(AuditChecksOverdue) as refused:
            rows.check_open()
        assert not refused.value.database_unreachable and "tell the security team" in str(refused.value)
    store.fail_head = DatabaseUnreachable("again")
    upkeep._safely()
    assert rows.database_unreachable
    store.fail_head = None
    upkeep._safely()
    assert not rows.database_unreachable and len(rows) == 0


def test_an_aggregated_row_that_cannot_be_appended_for_want_of_a_connection_counts_as_an_outage() -> None:
    class _Unreachable(FakeAuditLog):
        def append(self, event: AuditEvent) -> int:
            raise AuditDatabaseUnreachable("the vault's database cannot be reached")

    rows, meter = AppendedRows(), TokenizeMeter()
    meter.record(Caller("etl-service", "a1", "ff"), 7, 1)
    upkeep = upkeep_with(_Unreachable(), FakeChainStore(chained_records(1)), meter, [], [], appended=rows)
    upkeep._safely()
    assert rows.database_unreachable


def test_only_a_pool_that_gets_no_connection_is_translated_as_the_database_unreachable() -> None:
    @translated
    def failing(error: Exception) -> None:
        raise error

    with pytest.raises(DatabaseUnreachable):
        failing(PoolTimeout("couldn't get a connection after 10.00 sec"))
    for error in (
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.errors.QueryCanceled(),
    ):
        with pytest.raises(DatabaseUnavailable) as raised:
            failing(error)
        assert not isinstance(raised.value, DatabaseUnreachable)


def test_an_admin_command_skips_a_checkpoint_file_it_may_not_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vault's file (its own user's, 0600) refused the operator's append, and the command its work (R19-9)."""
    head = ChainHead(3, b"\x03" * 32, 3, datetime(2026, 12, 4, 15, 0, tzinfo=UTC))
    theirs = tmp_path / "checkpoints.jsonl"
    theirs.write_text("")

    def not_yours(*_: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("vault_service.service.checkpoint_export.os.open", not_yours)
    with caplog.at_level(logging.WARNING):
        checkpoint_exporter(theirs, create=False)(Checkpoint(head, "k", "vault:v1:c2ln"))
    assert "is not writable by this user: this command does not create it or take it over" in caplog.text
    with pytest.raises(PermissionError):
        checkpoint_exporter(theirs)(Checkpoint(head, "k", "vault:v1:c2ln"))  # the vault's own export still fails loudly
