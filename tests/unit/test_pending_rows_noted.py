"""Notes of the rows a replica appended and had not anchored: exported before each round, required by verify.

Retest 17, finding A (HIGH): a replica the database owner kills during its round (a huge message on
one of its statements, past its memory limit) named nothing outside the database; the owner then
rewrote a served reveal's row and verify passed. Now each round first exports a note of the rows
not noted yet (domain/pending_rows.py), and verification requires them in the log as appended.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, chained_records, upkeep_with
from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.audit import AuditRecord
from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.pending_rows import PendingNote, check_notes
from vault_service.service.exported_copy import UnreadableExportedCopy, read_exported_copy
from vault_service.service.metering import TokenizeMeter


def _note(records: list[AuditRecord]) -> PendingNote:
    return PendingNote.of({r.record_id: r.row_hash for r in records})


def test_a_note_of_interleaved_ids_is_compact_and_reads_back_as_written() -> None:
    records = chained_records(40)
    mine = records[1:30:2] + records[30:]  # another replica's rows between ours, then a run of our own
    note = _note(mine)
    line = json.dumps({"audit_pending": note.exported()})
    assert PendingNote.from_exported(json.loads(line)["audit_pending"]) == note
    assert list(note.ids()) == sorted(r.record_id for r in mine)
    assert note.rows == len(mine) and len(json.dumps(note.exported()["runs"])) < 5 * len(mine)
    assert note.described().startswith("2, 4, 6")


def test_verify_passes_rows_as_noted_and_names_a_row_rewritten_or_deleted_after_its_note() -> None:
    records = chained_records(10)
    note = _note(records[5:8])  # ids 6 to 8
    assert check_notes(records, [note]) is None
    rewritten = [*records[:6], replace(records[6], row_hash=b"\7" * 32), *records[7:]]
    finding = check_notes(rewritten, [note])
    assert finding is not None and finding.first_row == 6 and "rewritten since" in finding.reason
    finding = check_notes(records[:6] + records[8:], [note])  # 7 and 8 deleted
    assert finding is not None and finding.first_row == 7 and "7 to 8 are not in the log" in finding.reason


@pytest.mark.parametrize(
    "fields",
    [
        {"runs": [5, 3], "rows": 2, "digest": "0" * 64},  # the count is not the runs'
        {"runs": [5, 10**12], "rows": 10**12, "digest": "0" * 64},  # more than any replica remembers
        {"runs": [5, 0], "rows": 0, "digest": "0" * 64},
        {"runs": [5, 2, 0, 1], "rows": 3, "digest": "0" * 64},  # overlapping runs
        {"runs": [5, 1], "rows": 1, "digest": "zz" * 32},
        {"runs": [5], "rows": 1, "digest": "0" * 64},
        {"rows": 1, "digest": "0" * 64},
    ],
)
def test_a_note_not_as_written_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        PendingNote.from_exported(fields)


def test_the_exported_copy_reads_notes_from_the_file_the_json_log_and_wrapped_lines(tmp_path: Path) -> None:
    note = _note(chained_records(3))
    noted = {"audit_pending": note.exported()}
    log_line = json.dumps({"message": "audit rows pending", "levelname": "INFO", **noted})
    copy = tmp_path / "copy.jsonl"
    copy.write_text(
        "\n".join([json.dumps(noted), log_line, json.dumps({"log": log_line + "\n", "stream": "stdout"})]) + "\n"
    )
    assert read_exported_copy(copy).pending == (note, note, note)
    copy.write_text(json.dumps({"audit_pending": {**note.exported(), "rows": 2}}) + "\n")
    with pytest.raises(UnreadableExportedCopy):  # a note changed or cut short refuses the copy, never skipped
        read_exported_copy(copy)
    copy.write_text(json.dumps({"message": 'a role default named "x.audit_pending" is set'}) + "\n")
    assert read_exported_copy(copy).pending == ()  # the owner's text in a log line is no note


def test_each_round_first_notes_the_rows_appended_since_the_last_note_before_any_statement() -> None:
    records = chained_records(5)
    store = FakeChainStore(records)
    appended = AppendedRows()
    appended.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records[:3]])
    notes: list[PendingNote] = []
    statements_at_note: list[int] = []
    exported: list[Checkpoint] = []

    def note(pending: PendingNote) -> None:
        notes.append(pending)
        statements_at_note.append(len(exported))

    def failing_head(*args: object) -> None:
        raise RuntimeError("killed during the round")

    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=appended, note_pending=note)
    store.head = failing_head  # type: ignore[assignment,method-assign]
    with pytest.raises(RuntimeError):
        upkeep.run_once()  # the round dies in its statements: the rows were named before
    assert [list(n.ids()) for n in notes] == [[1, 2, 3]] and notes[0] == _note(records[:3])
    del store.head
    upkeep.run_once()  # nothing new: no second line
    assert len(notes) == 1 and exported
    appended.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records[3:]])
    upkeep.run_once()
    assert [list(n.ids()) for n in notes] == [[1, 2, 3], [4, 5]]


def test_a_note_the_checkpoint_file_refuses_lets_the_round_check_and_anchor_and_is_tried_again() -> None:
    records = chained_records(3)
    appended = AppendedRows()
    appended.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records[:2]])
    attempts: list[list[int]] = []
    refuse = [True]

    def note(pending: PendingNote) -> None:
        attempts.append(list(pending.ids()))
        if refuse[0]:
            raise PermissionError("checkpoint file: permission denied")

    exported: list[Checkpoint] = []
    store = FakeChainStore(records[:2])
    upkeep = upkeep_with(FakeAuditLog(), store, TokenizeMeter(), exported, [], appended=appended, note_pending=note)
    upkeep.run_once()
    assert exported and exported[-1].head.head_id == 2  # checked and anchored all the same (R18-11's wording kept)
    assert len(appended) == 0
    appended.remember([(3, (records[2].prev_hash, records[2].row_hash))])
    store.records = records

    def failing_head(*args: object) -> None:
        raise RuntimeError("the round fails")

    store.head = failing_head  # type: ignore[assignment,method-assign]
    with pytest.raises(RuntimeError):
        upkeep.run_once()  # refused again, and the round fails: row 3 stays remembered, not noted
    refuse[0] = False
    del store.head
    upkeep.run_once()
    assert attempts == [[1, 2], [3], [3]]
