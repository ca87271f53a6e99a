"""A report counts the log's rows before reading it: from the newest checkpoint only when its signature holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import psycopg

from vault_service.entrypoints.audit_report_session import EVERY_ROW, NEWEST_SIGNED, NEWEST_SIGNED_V1, log_rows

AT = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


class _Pool:
    """Answers the two counting statements as a database holding `newest` (None: no checkpoint) and `every` rows."""

    def __init__(self, newest: tuple[Any, ...] | None, every: int, before_0070: bool = False) -> None:
        self.answers = {NEWEST_SIGNED: newest, NEWEST_SIGNED_V1: newest, EVERY_ROW: (every,)}
        self.asked: list[str] = []
        self.before_0070 = before_0070

    @contextmanager
    def connection(self) -> Iterator[_Pool]:
        yield self

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def execute(self, statement: str) -> _Pool:
        self.asked.append(statement)
        if self.before_0070 and "erase_count" in statement:
            raise psycopg.errors.UndefinedColumn("column c.erase_count does not exist")
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.answers[self.asked[-1]]


def test_the_newest_signed_checkpoint_counts_the_rows_up_to_its_head_and_the_rows_after_are_added() -> None:
    pool = _Pool((200, b"\x01" * 32, 100, AT, "vault:v1:sig", 7, None, None), every=999)

    assert log_rows(cast(Any, pool), lambda data, signature: True) == 107
    assert pool.asked == [NEWEST_SIGNED]


def test_a_checkpoint_committing_to_the_erase_rows_is_checked_over_its_v2_message() -> None:
    committed = _Pool((200, b"\x01" * 32, 100, AT, "vault:v1:sig", 7, 3, b"\x02" * 32), every=999)

    assert log_rows(cast(Any, committed), lambda data, signature: data.endswith(b":3:" + b"02" * 32)) == 107


def test_a_checkpoint_whose_signature_does_not_hold_or_none_at_all_and_every_row_is_counted() -> None:
    forged = _Pool((10**9, b"\x01" * 32, 1, AT, "vault:v1:forged", 0, None, None), every=250_000)
    empty = _Pool(None, every=3)

    assert log_rows(cast(Any, forged), lambda data, signature: False) == 250_000
    assert log_rows(cast(Any, empty), lambda data, signature: True) == 3


def test_a_database_before_0070_is_read_for_its_v1_checkpoint() -> None:
    """The service runs through an upgrade: without migration 0070's columns the report still counts from the head."""
    before = _Pool((200, b"\x01" * 32, 100, AT, "vault:v1:sig", 7, None, None), every=999, before_0070=True)

    assert log_rows(cast(Any, before), lambda data, signature: b":v1:" in data) == 107
    assert before.asked == [NEWEST_SIGNED, NEWEST_SIGNED_V1]
