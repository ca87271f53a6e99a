"""Each appended audit row checked against the chain segment up to the head (domain/anchoring.py), and the
missing rows named in the exported checkpoint, which audit-verify reports."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from psycopg_pool import ConnectionPool

from tests.unit.vault_settings import vault_env
from tokenvault_common.env import ConfigError
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.config import VaultServiceConfig
from vault_service.domain.anchoring import AppendedRows, AuditChecksOverdue, Link, stored_as_written
from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint, verify_log
from vault_service.domain.errors import AuditUnavailable
from vault_service.domain.segment_check import HASHED_PER_PAUSE, SegmentCheck, SegmentRow

_T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _chain(events: list[AuditEvent], first_id: int = 1, prev: bytes = GENESIS_HASH) -> list[AuditRecord]:
    records = []
    for n, event in enumerate(events):
        record_id, at = first_id + n, _T0 + timedelta(seconds=n)
        row_hash = chain_hash_v2(prev, record_id, at, event)
        records.append(AuditRecord(record_id, at, event, prev, row_hash))
        prev = row_hash
    return records


def _events(count: int, client: str = "analyst") -> list[AuditEvent]:
    return [AuditEvent(client, "detokenize", "ok: 1 revealed, 0 refused", 1, f"INC-{n}", "ip") for n in range(count)]


def _head(record: AuditRecord, count: int) -> ChainHead:
    return ChainHead(record.record_id, record.row_hash, count, record.at)


def _link(record: AuditRecord) -> Link:
    return record.prev_hash, record.row_hash


def _rows(shown: list[AuditRecord], appended: dict[int, Link]) -> list[SegmentRow]:
    """`shown` as the segment read gives it: the fields of the rows the upkeep must hash itself."""
    own = {(i, row) for i, (_, row) in appended.items()}
    return [
        SegmentRow(r.record_id, r.prev_hash, r.row_hash, None if (r.record_id, r.row_hash) in own else r) for r in shown
    ]


def _missing(shown: list[AuditRecord], head: ChainHead | None, appended: dict[int, Link]) -> tuple[int, ...]:
    """What the upkeep finds with `shown` as the log, read in pages of 2 rows."""
    check, rows = SegmentCheck(head, appended), _rows(shown, appended)
    for start in range(0, len(rows), 2):
        if not check.add(rows[start : start + 2]):
            break
    return check.missing()


def test_rows_in_the_segment_with_their_hash_are_not_missing() -> None:
    chain = _chain(_events(5))
    appended = {r.record_id: _link(r) for r in chain[1:4]}
    assert _missing(chain[1:], _head(chain[-1], 5), appended) == ()
    assert [r.record_id for r in _rows(chain[1:], appended) if r.record is not None] == [5]


def test_a_round_pauses_after_every_64_rows_it_hashes_itself_and_finds_the_same() -> None:
    # Review 16, finding 3: another replica's rows were hashed in one burst per round, holding the
    # interpreter for ~16 µs a row while calls waited; the round now yields every 64 rows.
    chain = _chain(_events(140))
    appended = {r.record_id: _link(r) for r in chain[:4]}
    pauses: list[int] = []
    check = SegmentCheck(_head(chain[-1], 140), appended, lambda: pauses.append(1))
    assert check.add(_rows(chain, appended)) and check.missing() == ()
    assert len(pauses) == 136 // HASHED_PER_PAUSE == 2


def test_a_row_left_out_of_the_chain_or_beyond_the_head_is_missing() -> None:
    chain = _chain(_events(4))
    ghost = AuditRecord(99, _T0, _events(1)[0], chain[1].row_hash, b"\x01" * 32)
    appended = {chain[2].record_id: _link(chain[2]), 3_000: _link(ghost), 99: _link(ghost)}
    appended[chain[1].record_id] = (chain[1].prev_hash, b"\x02" * 32)  # another hash at a row's id
    assert _missing(chain, _head(chain[-1], 4), appended) == (2, 99, 3_000)
    assert _missing([], None, appended) == (2, 3, 99, 3_000)


def test_a_ghost_row_shown_in_the_segment_with_a_faked_link_makes_the_segment_vouch_for_nothing() -> None:
    # A (ghost) is shown between rows 2 and 3, and row 3 shown linking to it: row 3's hash covers
    # its real link, so the segment does not hold, and every appended row in it is reported.
    first = _chain(_events(2))
    chain = first + _chain(_events(2), first_id=4, prev=first[-1].row_hash)  # id 3: a rolled-back insert
    (ghost,) = _chain(_events(1, "colluder"), first_id=3, prev=first[-1].row_hash)
    shown = [chain[0], chain[1], ghost, replace(chain[2], prev_hash=ghost.row_hash), chain[3]]
    appended = {ghost.record_id: _link(ghost), chain[3].record_id: _link(chain[3])}
    assert _missing(shown, _head(chain[-1], 4), appended) == tuple(sorted(appended))
    assert _missing(shown[:2], _head(chain[-1], 4), {2: _link(chain[1])}) == (2,)  # not ending at the head


def test_a_row_too_large_to_fetch_or_with_a_hash_of_another_length_breaks_the_segment_at_its_id() -> None:
    # Review 17 #1: the segment read fetches no field larger than a genuine row can hold; such a
    # row cannot be hashed, so the segment holds for nothing, and the round names where it broke.
    chain = _chain(_events(4))
    appended = {1: _link(chain[0]), 4: _link(chain[3])}
    rows = _rows(chain, appended)
    oversize = replace(rows[1], record=None, oversize=True)
    check = SegmentCheck(_head(chain[-1], 4), appended)
    assert not check.add([rows[0], oversize, *rows[2:]])
    assert check.broken_at == 2 and check.missing() == (1, 4)
    unread_hash = replace(rows[2], row_hash=b"")  # a hash of another length, shown as b""
    check = SegmentCheck(_head(chain[-1], 4), appended)
    assert check.add(rows[:2]) and not check.add([unread_hash, rows[3]])
    assert check.broken_at == 3 and check.missing() == (1, 4)
    check = SegmentCheck(_head(chain[-1], 4), appended)
    assert check.add(rows[:2]) and check.add(rows[2:]) and check.broken_at is None and check.missing() == ()
    assert check.appended_after(1, 5) == [(4, chain[3].row_hash)]


def test_an_appended_row_is_stored_as_written_only_with_its_events_hash() -> None:
    (record,) = _chain(_events(1))
    assert stored_as_written(record, record.event)
    assert not stored_as_written(record, replace(record.event, purpose="INC-other"))
    assert not stored_as_written(replace(record, row_hash=b"\x00"), record.event)


def test_appends_are_refused_once_the_oldest_unchecked_row_is_older_than_the_bound_never_dropped() -> None:
    # Review 16, finding 1: a replica whose rounds fail kept its rows in memory, unchecked, and
    # past the bound dropped new ones (counted only): the calls went on. Now the appends stop.
    now, refused = [100.0], list[int]()
    rows = AppendedRows(limit=10, max_age=60.0, on_refused=refused.append, clock=lambda: now[0])
    a, b = (b"p", b"a"), (b"a", b"b")
    rows.remember([(1, a)])
    now[0] += 30
    rows.remember([(2, b)])
    now[0] += 30
    rows.check_open()  # the oldest is 60 s old: at the bound, not past it
    now[0] += 1
    with pytest.raises(AuditChecksOverdue, match=r"not checked this replica's audit rows for 61 s") as raised:
        rows.check_open()
    assert isinstance(raised.value, AuditUnavailable) and "tell the security team" in str(raised.value)
    assert refused == [1]
    rows.forget([1])  # a round checked the oldest: the next oldest is 31 s old
    rows.check_open()
    assert rows.remembered() == {2: b}


def test_a_refused_append_is_logged_from_the_refusals_reason_not_from_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Review 17 #2: the log line was cut out of the message at ", so the call"; a reworded
    # message would have logged the caller's advice, or the whole text, as the reason.
    rows = AppendedRows(limit=1)
    rows.remember([(5, (b"p", b"r"))])
    log = PostgresAuditLog(cast(ConnectionPool, None), rows)  # refused before any connection is taken
    with caplog.at_level(logging.ERROR), pytest.raises(AuditChecksOverdue) as raised:
        log.append(_events(1)[0])
    assert raised.value.reason == "1 of this replica's audit rows are waiting for the audit upkeep's check (the bound)"
    assert str(raised.value).startswith(raised.value.reason + ", so the call was refused")
    assert caplog.messages == [
        f"audit appends refused: {raised.value.reason}. Counted in tokenvault_audit_rows_unchecked_total until a"
        " round succeeds (logged once)"
    ]


def test_appends_are_refused_at_the_bound_of_remembered_rows_and_no_row_written_is_dropped() -> None:
    refused: list[int] = []
    rows = AppendedRows(limit=2, on_refused=refused.append)
    a, b, c = (b"p", b"a"), (b"a", b"b"), (b"b", b"c")
    rows.remember([(1, a)])
    rows.check_open()
    rows.remember([(2, b), (3, c)])  # a group already written is remembered whole, past the bound
    with pytest.raises(AuditChecksOverdue, match="3 of this replica's audit rows are waiting"):
        rows.check_open()
    assert refused == [1] and rows.remembered() == {1: a, 2: b, 3: c}
    rows.forget([1, 2])
    rows.check_open()


def _signed(data: bytes) -> str:
    return "sig:" + data.hex()


def _valid(data: bytes, signature: str) -> bool:
    return signature == _signed(data)


def test_audit_verify_names_the_missing_rows_of_an_exported_checkpoint() -> None:
    chain = _chain(_events(3))
    head = _head(chain[-1], 3)
    stored = Checkpoint(head, "k", _signed(head.message()))
    noted = replace(stored, missing=(7, 9))
    noted = replace(noted, missing_signature=_signed(noted.missing_message()))
    assert verify_log(chain, [stored], [stored], _valid) is None
    assert Checkpoint.from_exported(noted.exported()) == noted
    finding = verify_log(chain, [stored], [noted], _valid)
    assert finding is not None and finding.first_row == 7 and "7, 9" in finding.reason
    forged = replace(noted, missing=(7,))  # the note cut down: its signature no longer holds
    finding = verify_log(chain, [stored], [forged], _valid)
    assert finding is not None and "bad signature" in finding.reason


def test_the_unchecked_bound_defaults_to_thirty_checkpoint_intervals_and_is_at_least_five(tmp_path: Path) -> None:
    env = vault_env(tmp_path)
    assert VaultServiceConfig.from_env(env).audit_unchecked_seconds == 60
    config = VaultServiceConfig.from_env({**env, "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1"})
    assert config.audit_unchecked_seconds == 30
    with pytest.raises(ConfigError, match="TOKENVAULT_AUDIT_UNCHECKED_SECONDS"):
        VaultServiceConfig.from_env({**env, "TOKENVAULT_AUDIT_UNCHECKED_SECONDS": "9"})  # 5 intervals: 10 s


def test_rows_unchecked_past_three_intervals_are_logged_once_by_id_before_any_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Review 17, finding 1: a replica killed (OOM) before the bound left no trace of its unchecked
    # rows. The ids are logged early, once per stretch, outside the database.
    now = [0.0]
    rows = AppendedRows(max_age=60.0, warn_age=6.0, clock=lambda: now[0])
    rows.remember([(7, (b"p", b"r")), (9, (b"q", b"s"))])
    now[0] = 5.0
    with caplog.at_level(logging.WARNING):
        rows.check_open()
        assert caplog.text == "" and rows.oldest_age() == 5.0
        now[0] = 7.0
        rows.check_open()
        rows.check_open()
    assert caplog.text.count("2 audit row(s) this service appended (ids 7 to 9) have waited 7 s") == 1
    rows.forget([7, 9])
    rows.check_open()  # a new stretch warns again
    rows.remember([(11, (b"r", b"t"))])
    now[0] = 20.0
    with caplog.at_level(logging.WARNING):
        rows.check_open()
    assert "1 audit row(s) this service appended (ids 11 to 11)" in caplog.text
    assert rows.oldest_age() == 13.0


def test_reveals_refused_for_want_of_a_signature_do_not_promise_a_refusal_clears_by_itself() -> None:
    """Review 50, R50-5: the vault's health follows the KEK only, so a refusal of the audit signing key alone (its
    policy, the key missing) leaves it SERVING and never clears by itself - the advice said both of every case."""
    said = str(AuditChecksOverdue("rows unchecked", signer_unavailable=True))
    assert "refusing the audit signing key" in said and "health stays SERVING" in said, said
    assert "NOT_SERVING: this clears by itself once it answers" in said, said
